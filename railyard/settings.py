"""The one settings object: env vars with a ``RAILYARD_`` prefix, an optional ``.env``.

Every embedded default lives under ``home`` (``RAILYARD_HOME``, default ``.railyard/``), so
pointing ``RAILYARD_HOME`` elsewhere gives a fully separate world: MLflow DB, model store,
serving model root, data cache, reports.
"""

from __future__ import annotations

import json
import os
import re
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from railyard.configs import (
    RANKING_MAX_CANDIDATES,
    BakeBudget,
    DriftThresholds,
    GateThresholds,
    RankingConfig,
    ScorerConfig,
    SmokeBudget,
    TrainConfig,
    ValidationBounds,
)
from railyard.errors import Refused
from railyard.locations import Location
from railyard.runtime import DEFAULT_TF_LOG_LEVEL

# Written by `railyard up` (owner-only: the MLflow URL holds a password): the home's Prefect server,
# and on PostgreSQL its MLflow database, are the platform's from then on.
TRACKING_FILE = "platform/tracking.json"

# Model names become path components and S3 key prefixes: keep them to a safe alphabet.
MODEL_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def validate_model_name(name: str) -> str:
    if not MODEL_NAME_PATTERN.fullmatch(name) or ".." in name:
        raise ValueError(
            f"invalid model name {name!r}: use letters, digits, '_', '-', '.' "
            "(no '/', no '..', not empty, at most 100 characters)"
        )
    return name


# Settings that moved to a model kind's own settings: a value left under the old name would be
# silently ignored, so it is refused naming the new one.
RENAMED = {"RAILYARD_EMBEDDING_DIM": "RAILYARD_NEURAL_CF_EMBEDDING_DIM"}


# The drift check's (warn, block) thresholds (railyard/drift.py): per feature, then per kind of
# distance for the declared aggregates. Measured on six generated worlds (sessions mode, 3,000
# ratings a day, 600 or 1,000 users, seeds 3, 7, 11), 20 ordinary days each against the day
# before: one warning in 120 days (label_rate 0.166), no block (tests/unit/test_drift.py).
DRIFT_THRESHOLDS = {
    "rating": (0.2, 0.3),  # Jensen-Shannon distance of the half-star histograms
    "userId": (0.2, 0.3),  # L-infinity of the top users' shares (a day has a few dozen sessions)
    "movieId": (0.05, 0.1),
    "genres": (0.05, 0.1),
    "label_rate": (0.15, 0.25),  # absolute difference
    "new_user_share": (0.45, 0.6),
    "new_movie_share": (0.02, 0.05),
    "events_per_day": (0.5, 0.9),  # a day's relative change against the reference's mean
}
# A declared aggregate's histogram is over the day's users (a few dozen sessions in generated
# data: their distances reached 0.63 on ordinary days) or movies.
DRIFT_KIND_THRESHOLDS = {"js": (0.7, 0.9), "linf": (0.05, 0.1), "difference": (0.1, 0.2), "day_change": (0.5, 0.9)}


def _endpoints(value: str) -> list[str]:
    """A comma-separated list of serving endpoints (one per replica), blanks stripped."""
    return [part.strip() for part in value.split(",")]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="RAILYARD_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    home: Path = Field(default=Path(".railyard"), description="State folder for embedded defaults.")
    model_name: str = "recmodel"

    # Data: None means the generated default data set under home (data/default).
    data_dir: Path | None = None
    holdout_fraction: float = Field(default=0.2, gt=0, lt=1)
    # The feature build: Polars on this machine, or partitioned on a Dask cluster (railyard/partitioned.py).
    feature_engine: Literal["polars", "dask"] = "polars"
    dask_scheduler: str = ""  # tcp://host:8786: an existing cluster; empty: a LocalCluster for the run
    dask_workers: int = Field(default=2, ge=1)  # the LocalCluster's worker processes
    dask_worker_memory: str = "4GiB"  # each local worker's limit: it spills to disk under home/dask first
    # Where each run's feature folder goes: empty, the run's folder under home; s3://bucket/prefix,
    # <prefix>/<run> on S3 (RAILYARD_S3_ENDPOINT_URL and the AWS credential chain, as for the store).
    features_uri: str = ""

    # Tracking and storage; None means the embedded default under home.
    mlflow_tracking_uri: str | None = None
    mlflow_experiment: str = "railyard"
    store_uri: str | None = None
    s3_endpoint_url: str | None = None

    # Serving: no endpoints means the local TF-Serving-compatible server, started in the background.
    # Replicas of one server (sharing the model root): comma-separated, in the same order.
    serving_grpc: str | None = None  # host:port[,host:port...]
    serving_rest: str | None = None  # http://host:port[,http://host:port...]
    serving_model_root: Path | None = None  # where versions are written for the server
    serving_server_model_root: str | None = None  # the same folder as the server sees it (/models in compose)
    # The local server's ports. Unset: TF Serving's (8501, 8500) when free, else any free port (a
    # second home on the machine); 0: any free port; a port set and taken is refused at once.
    local_serving_rest_port: int | None = Field(default=None, ge=0, le=65535)
    local_serving_grpc_port: int | None = Field(default=None, ge=0, le=65535)
    serving_load_timeout_s: float = Field(default=360.0, gt=0)  # TF Serving retries failed loads 5 x 60 s
    serving_attempts: int = Field(default=5, ge=1)  # per call, with exponential backoff, when serving is down

    # Online feature store: no URL means an embedded Valkey server under home, on loopback.
    online_store_url: SecretStr | None = None  # redis://[:password@]host:port/db: a secret (it carries the password)
    # Unset: 6399, or any free port when 6399 is taken (a second home on this machine); 0: any free
    # port; another number: that port, refused at once when taken.
    local_online_store_port: int | None = Field(default=None, ge=0, le=65535)
    # Event ingestion (`railyard ingest`): events read per batch, and how long an entry may stay
    # pending with a consumer before another consumer reclaims it (the consumer crashed).
    ingest_batch_size: int = Field(default=1_000, ge=1)
    ingest_claim_idle_s: float = Field(default=60.0, gt=0)
    # The streaming scorer (`railyard score-stream`): micro-batches flushed at N requests or T ms,
    # a stopped scorer's requests claimed by another after the idle time, each request id's
    # result marker kept for the TTL (a duplicate within it gets no second result), the results
    # stream trimmed to about a length, and its /metrics, /healthz, /readyz port (0: any free port).
    scorer_batch_size: int = Field(default=64, ge=1, le=10_000)
    scorer_flush_ms: float = Field(default=5.0, ge=0)
    scorer_claim_idle_s: float = Field(default=30.0, gt=0)
    scorer_result_ttl_s: int = Field(default=7 * 86_400, ge=1)
    scorer_results_maxlen: int = Field(default=1_000_000, ge=1)
    scorer_max_movies: int = Field(default=100, ge=1, le=10_000)
    scorer_serving_timeout_s: float = Field(default=5.0, gt=0)
    scorer_labels_ttl_s: float = Field(default=1.0, gt=0)
    scorer_metrics_port: int = Field(default=8610, ge=0, le=65535)
    # The ranking service (`railyard rank-server`; its --host, --port, --candidates override the
    # first three): where it listens (loopback: the API has no authentication), candidates scored
    # per recommendation, how long one TF Serving replica may take (tries, and the pause between
    # them) before the next replica answers, how often the canary's share and the served labels are
    # read again, and how often the live figures are written to the online store.
    ranking_host: str = Field(default="127.0.0.1", min_length=1)
    ranking_port: int = Field(default=8600, ge=1, le=65535)
    ranking_candidates: int = Field(default=100, ge=1, le=RANKING_MAX_CANDIDATES)
    ranking_replica_timeout_s: float = Field(default=5.0, gt=0)
    ranking_replica_attempts: int = Field(default=2, ge=1)
    ranking_replica_backoff_s: float = Field(default=0.05, ge=0)
    ranking_share_ttl_s: float = Field(default=0.5, ge=0)
    ranking_labels_ttl_s: float = Field(default=1.0, ge=0)
    ranking_live_flush_s: float = Field(default=0.25, gt=0)
    # Train/serve skew: entities sampled from the online store at each retrain, and the largest
    # share of them whose aggregates may differ from the offline ones before the run fails.
    skew_sample_size: int = Field(default=1_000, ge=1)
    max_skew_share: float = Field(default=0.01, ge=0, le=1)

    # Drift between training windows (railyard/drift.py): the newest days described, the
    # thresholds that differ from DRIFT_THRESHOLDS (JSON: {"userId": [0.25, 0.4]}; a declared
    # aggregate by name, or a kind: js, linf, difference, day_change), whether a block stops the
    # run (false: it is shown as a block but the run goes on, e.g. while thresholds are tuned on
    # new data), and why this run's block is overridden.
    drift_span_days: int = Field(default=1, ge=1)
    drift_thresholds: dict[str, tuple[float, float]] = Field(default_factory=dict)
    drift_block: bool = True
    drift_override: str = ""

    # Post-deploy smoke tests.
    smoke_p95_ms: float = Field(default=250.0, gt=0)
    smoke_requests: int = Field(default=200, ge=1)
    smoke_concurrency: int = Field(default=4, ge=1)
    smoke_tolerance: float = Field(default=1e-5, ge=0)  # served vs. offline scores of the golden requests

    # Evaluation gate; None disables a check (with none at all, nothing is ever blessed).
    min_auc: float | None = 0.6
    max_logloss: float | None = 0.69
    # Against the production model, both scored on the same fresh holdout in the same run.
    min_auc_change: float | None = -0.01  # challenger AUC may be at most 0.01 below production
    max_logloss_change_relative: float | None = 0.02  # and its log loss at most 2% above
    # Does the model earn its keep: its AUC over the fresh baseline's (user + movie rates) on the
    # same holdout rows; applies with or without a production model.
    min_auc_lift: float | None = 0.005

    # Gray release through the ranking service: the share of users the canary serves once its
    # smoke tests passed, for a bake period before the review; over its budget it is rolled back.
    canary_share: float = Field(default=0.1, ge=0, le=1)
    bake_s: float = Field(default=0.0, ge=0)  # 0: no bake (embedded runs); e.g. 900 in production
    bake_max_error_rate: float = Field(default=0.01, ge=0, le=1)
    bake_max_p99_ms: float = Field(default=100.0, gt=0)
    bake_min_requests: int = Field(default=50, ge=1)

    # Human approval of a smoke-tested canary (seconds; timeout = rejected).
    approval_timeout_s: int = Field(default=86_400, gt=0)
    # How often a run paused in its own process (`railyard run`) asks Prefect whether its review was
    # answered (Prefect's own default: 10 s). A suspended deployment run is started again instead.
    review_poll_s: int = Field(default=10, ge=1)
    # One release at a time per model, through a lock in the model store. An S3 lock is a lease
    # renewed every lease/3 while held, so a crashed holder frees it after at most one lease.
    release_lock_lease_s: float = Field(default=120.0, gt=0)
    release_lock_wait_s: float = Field(default=3_600.0, ge=0)  # another release may be deploying
    # `railyard worker` stopped (SIGTERM, Ctrl-C): how long its runs may take to conclude their
    # releases as interrupted before whatever still runs is killed.
    worker_stop_grace_s: float = Field(default=30.0, gt=0)
    # `railyard up` (every service of the product on this machine, supervised): the restart backoff
    # of a service that died (doubling from base to cap), the grace a stopping service gets before
    # SIGKILL, and how long a service may take to become healthy when the platform starts.
    platform_restart_base_s: float = Field(default=1.0, gt=0)
    platform_restart_cap_s: float = Field(default=30.0, gt=0)
    platform_stop_grace_s: float = Field(default=15.0, gt=0)
    platform_start_timeout_s: float = Field(default=300.0, gt=0)
    # Ports: the tools' usual ones (the proxy in front of Prefect 4200, Prefect 4201, MLflow 5000, TF Serving 8501/8500, 6399, 8600)
    # while free, else free ones; false: free ones only. Either way the home records them.
    platform_usual_ports: bool = True
    # The proxy in front of Prefect's UI and API (`railyard up`) authenticates `railyard users`; behind
    # an OIDC proxy, list its addresses (comma-separated) to trust its X-Forwarded-User instead. Empty: off.
    proxy_trusted_upstreams: str = ""
    # How long a promote or rollback run started from a deployment waits for the proxy's record of
    # who started it (the proxy writes it just after Prefect created the run).
    started_record_wait_s: float = Field(default=10.0, gt=0)
    # Prefect's and MLflow's databases under `railyard up`: the embedded PostgreSQL, or SQLite files.
    platform_database: Literal["postgresql", "sqlite"] = "postgresql"
    # Housekeeping: per-run scratch folders (runs/, reports/) kept, newest first.
    keep_run_dirs: int = Field(default=10, ge=1)
    # TensorFlow's C++ log lines in every Railyard process (TF_CPP_MIN_LOG_LEVEL, inherited by the
    # processes it starts): 3 none (its errors reach Python as exceptions), 0 all; `--debug` gives 0.
    tf_log_level: int = Field(default=DEFAULT_TF_LOG_LEVEL, ge=0, le=3)
    # Optional: a URL that receives a short JSON message on failure, approval needed, promotion.
    webhook_url: SecretStr | None = None  # a secret: webhook URLs carry their token

    # Data validation bounds.
    min_rows: int = 1_000
    max_rows: int = 100_000_000
    min_positive_rate: float = 0.05
    max_positive_rate: float = 0.95

    # Training: which model kind (railyard/kinds/: a registered name or package.module:object;
    # its own settings are RAILYARD_<KIND>_*), and what every kind's training loop needs.
    model_kind: str = "fresh_wd"
    seed: int = 42
    epochs: int = 8
    batch_size: int = 1024
    learning_rate: float = 0.003
    early_stopping_patience: int = 2
    # Early stopping and any selection use the newest share of the training rows, never the holdout.
    validation_fraction: float = Field(default=0.1, gt=0, lt=1)
    # Warm starts (railyard/warm_start.py): full, warm or auto (warm unless it cannot be done, the
    # drift check warned or blocked, or this many days of data passed since the last full retrain);
    # a warm start trains on the ratings since production's cut-off and a replay of the older ones:
    # this many per new rating, at least the floor, at most the share (railyard.warm_start.Replay).
    training_start: Literal["full", "warm", "auto"] = "auto"
    full_retrain_days: int = Field(default=7, ge=1)
    warm_replay_share: float = Field(default=0.1, ge=0, le=1)
    warm_replay_per_new_row: float = Field(default=1.0, ge=0)
    warm_replay_min_rows: int = Field(default=100_000, ge=0)

    @field_validator("model_name")
    @classmethod
    def _check_model_name(cls, value: str) -> str:
        return validate_model_name(value)

    @field_validator("drift_thresholds")
    @classmethod
    def _check_drift_thresholds(cls, value: dict) -> dict:
        for name, (warn, block) in value.items():
            if not 0 <= warn <= block:
                raise ValueError(f"{name}: [warn, block] must be 0 <= warn <= block, got [{warn}, {block}]")
        return value

    @field_validator("features_uri")
    @classmethod
    def _check_features_uri(cls, value: str) -> str:
        return Location.of(value).url if value else value  # a local path or an s3:// URI

    @model_validator(mode="after")
    def _absolute_home(self) -> Settings:
        self.home = self.home.expanduser().resolve()
        for old, new in RENAMED.items():
            if old in os.environ:
                raise ValueError(f"{old} is now {new} (a setting of the neural_cf model kind): rename it")
        if (self.serving_grpc is None) != (self.serving_rest is None):
            raise ValueError("set both RAILYARD_SERVING_GRPC and RAILYARD_SERVING_REST, or neither (local server)")
        if self.serving_grpc is not None:
            grpc, rest = _endpoints(self.serving_grpc), _endpoints(self.serving_rest)
            if not all(grpc) or not all(rest) or len(grpc) != len(rest):
                raise ValueError(
                    "RAILYARD_SERVING_GRPC and RAILYARD_SERVING_REST must list the same number of replicas, "
                    f"comma-separated and in the same order (got {len(grpc)} gRPC and {len(rest)} REST endpoints"
                    f"{', some empty' if not all(grpc + rest) else ''})"
                )
        return self

    @property
    def serving_replicas(self) -> list[tuple[str, str]]:
        """The configured (gRPC, REST) endpoint of each replica; empty: the local server."""
        if self.serving_grpc is None or self.serving_rest is None:
            return []
        return list(zip(_endpoints(self.serving_grpc), _endpoints(self.serving_rest), strict=True))

    # -- each stage's configuration ----------------------------------------------------------

    def train_config(self) -> TrainConfig:
        return TrainConfig(
            epochs=self.epochs,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            seed=self.seed,
            early_stopping_patience=self.early_stopping_patience,
            validation_fraction=self.validation_fraction,
        )

    def validation_bounds(self) -> ValidationBounds:
        return ValidationBounds(
            min_rows=self.min_rows,
            max_rows=self.max_rows,
            min_positive_rate=self.min_positive_rate,
            max_positive_rate=self.max_positive_rate,
        )

    def gate_thresholds(self) -> GateThresholds:
        return GateThresholds(
            min_auc=self.min_auc,
            max_logloss=self.max_logloss,
            min_auc_change=self.min_auc_change,
            max_logloss_change_relative=self.max_logloss_change_relative,
            min_auc_lift=self.min_auc_lift,
        )

    def drift_limits(self) -> DriftThresholds:
        kinds = {kind: self.drift_thresholds.get(kind, pair) for kind, pair in DRIFT_KIND_THRESHOLDS.items()}
        named = DRIFT_THRESHOLDS | {k: v for k, v in self.drift_thresholds.items() if k not in DRIFT_KIND_THRESHOLDS}
        return DriftThresholds(by_feature=named, by_kind=kinds)

    def smoke_budget(self) -> SmokeBudget:
        return SmokeBudget(
            p95_ms=self.smoke_p95_ms,
            requests=self.smoke_requests,
            concurrency=self.smoke_concurrency,
            tolerance=self.smoke_tolerance,
        )

    def scorer_config(self) -> ScorerConfig:
        return ScorerConfig(
            batch_size=self.scorer_batch_size,
            flush_ms=self.scorer_flush_ms,
            claim_idle_s=self.scorer_claim_idle_s,
            result_ttl_s=self.scorer_result_ttl_s,
            results_maxlen=self.scorer_results_maxlen,
            max_movies=self.scorer_max_movies,
            serving_timeout_s=self.scorer_serving_timeout_s,
            labels_ttl_s=self.scorer_labels_ttl_s,
        )

    def ranking_config(self) -> RankingConfig:
        return RankingConfig(
            candidates=self.ranking_candidates,
            share_ttl_s=self.ranking_share_ttl_s,
            labels_ttl_s=self.ranking_labels_ttl_s,
            live_flush_s=self.ranking_live_flush_s,
        )

    def ranking_replica_options(self) -> dict:
        """A ranking service's client options for each TF Serving replica."""
        return {
            "timeout_s": self.ranking_replica_timeout_s,
            "attempts": self.ranking_replica_attempts,
            "backoff_s": self.ranking_replica_backoff_s,
        }

    def bake_budget(self) -> BakeBudget:
        return BakeBudget(
            seconds=self.bake_s,
            max_error_rate=self.bake_max_error_rate,
            max_p99_ms=self.bake_max_p99_ms,
            min_requests=self.bake_min_requests,
        )

    # -- where things live -------------------------------------------------------------------

    @cached_property
    def resolved_data_dir(self) -> Path:
        """The batch data set: RAILYARD_DATA_DIR, or the default one under home (generated by the
        first run), which the event stream's sink appends to either way."""
        return self.data_dir or self.home / "data" / "default"

    @cached_property
    def resolved_tracking_uri(self) -> str:
        """RAILYARD_MLFLOW_TRACKING_URI; else the platform's PostgreSQL database once `railyard up`
        moved the home's MLflow there (TRACKING_FILE); else SQLite."""
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        return self.platform_record.get("uri") or f"sqlite:///{self.home / 'mlflow.db'}"

    @property
    def shown_tracking_uri(self) -> str:
        """The tracking URI as output and logs may show it: a password in it masked."""
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", self.resolved_tracking_uri)

    @cached_property
    def platform_prefect_api_url(self) -> str | None:
        """The API of this home's Prefect server once `railyard up` ran it (its runs live there)."""
        return self.platform_record.get("prefect_api_url")

    @cached_property
    def platform_record(self) -> dict:
        """What `railyard up` recorded for this home (TRACKING_FILE), or nothing."""
        try:
            found = json.loads((self.home / TRACKING_FILE).read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return found if isinstance(found, dict) else {}

    @cached_property
    def mlflow_artifacts_dir(self) -> Path:
        return self.home / "mlartifacts"

    @cached_property
    def resolved_store_uri(self) -> str:
        return self.store_uri or (self.home / "store").as_uri()

    @cached_property
    def resolved_serving_model_root(self) -> Path:
        return self.serving_model_root or self.home / "serving" / "models"

    @cached_property
    def local_serving_dir(self) -> Path:
        """State file and log of the background local server."""
        return self.home / "serving"

    @cached_property
    def work_dir(self) -> Path:
        """Per-run scratch output (features, exports, reports)."""
        return self.home / "runs"

    @cached_property
    def reports_dir(self) -> Path:
        return self.home / "reports"

    @cached_property
    def raw_validation_record(self) -> Path:
        """The ratings files that last passed the raw suite: the next run checks the others row by row."""
        return self.home / "validation" / "raw_ratings.json"

    def feature_folder(self, run_key: str) -> Location:
        """Where run ``run_key`` builds its features: under RAILYARD_FEATURES_URI, else its work folder."""
        if self.features_uri:
            return Location.of(self.features_uri, self.s3_endpoint_url) / run_key
        return Location.of(self.work_dir / run_key / "features")


class SettingsError(Refused):
    """A setting has a value Railyard cannot use."""

    next_step = "fix the RAILYARD_* variable named (environment or .env) and run again"


def load_settings() -> Settings:
    """The settings from the environment; a bad value is one sentence per setting, naming its
    variable and never echoing the value (it may be a secret)."""
    try:
        return Settings()
    except ValidationError as error:
        raise SettingsError(settings_problems(error, "RAILYARD_")) from None


def settings_problems(error: ValidationError, prefix: str) -> str:
    """One sentence per bad setting, naming its variable (``prefix`` + field) and never its value."""
    problems = []
    for item in error.errors(include_input=False, include_url=False):
        field = ".".join(str(part) for part in item["loc"]) if item["loc"] else "settings"
        name = f"{prefix}{field.upper()}" if item["loc"] else field
        problems.append(f"{name}: {item['msg'].removeprefix('Value error, ')}")
    return "; ".join(problems)
