"""Promotion stages of model versions in the MLflow registry, with an audit trail.

MLflow's own stages are deprecated and keep no history; here a version's stage is a tag
(``railyard.stage``), the current holders of ``staging`` and ``production`` are aliases
(``champion`` follows production), and every change is its own tag
``railyard.transition.<seq>`` holding {stage, from, actor, time, reason, flow_run_id}, so the
history of what was in production, who put it there and why is never overwritten. With a model
store, those tags mirror the store's transition log (model_registry/history.py): what Railyard
shows and decides on (stage, who, when, why) is read from the log, and MLflow is compared with it
field by field and repaired from it.

One number everywhere: MLflow version N is store version N (and TF Serving version N).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from functools import partial

from model_registry.history import (
    HistoryMismatch,
    as_entry,
    entry_disagreements,
    mirrored_history,
    record_hash,
    versions_history,
)
from model_registry.store import ModelStore
from railyard.errors import SEE_STATUS, Refused
from railyard.mlflow_reads import open_reads
from railyard.tracking import mlflow_client

TAG_PREFIX = "railyard."
STAGE_TAG = "railyard.stage"
HISTORY_HEAD_TAG = "railyard.history_head"  # on the registered model: the log's newest record hash
SMOKE_TAG = "railyard.smoke_passed"
TRANSITION_PREFIX = "railyard.transition."
# JSON: the run carrying a version through its release (flow run, process, how it waits), so
# that a later process can tell when that run is gone (model_registry/release_rules.py).
RELEASE_RUN_TAG = "railyard.release_run"
SERVING_LABEL_TAG = "railyard.serving_label"  # mirrors the serving label for the MLflow UI
RELEASE_ENDED_TAG = "railyard.release_ended"  # on the version's run: approved, rejected, timed out, crashed, …
# MLflow 3 links a run to registered versions through a logged model of the run naming them in this tag.
MODEL_VERSIONS_TAG = "mlflow.modelVersions"
_BOOKKEEPING = (STAGE_TAG, SMOKE_TAG, RELEASE_RUN_TAG)
_REASON_LIMIT = 2_000  # MLflow caps tag values (8000 chars); keep each entry well inside


class Stage(str, Enum):
    CANDIDATE = "candidate"
    STAGING = "staging"
    PRODUCTION = "production"
    ARCHIVED = "archived"
    REJECTED = "rejected"


LEGAL = {
    Stage.CANDIDATE: {Stage.STAGING, Stage.REJECTED},
    Stage.STAGING: {Stage.PRODUCTION, Stage.REJECTED},
    Stage.PRODUCTION: {Stage.ARCHIVED},
    Stage.ARCHIVED: {Stage.PRODUCTION},  # a rollback
    Stage.REJECTED: set(),
}
ALIASES = {Stage.STAGING: ("staging",), Stage.PRODUCTION: ("production", "champion")}


class IllegalTransition(Refused, ValueError):
    """A stage change the release process does not allow."""

    next_step = SEE_STATUS


class RegistryOutOfSync(Refused):
    """MLflow's version numbers no longer match the store's."""


@dataclass(frozen=True)
class Drift:
    """One way MLflow's mirror differs from the transition log: what a verification reports,
    what the repair says, and the repair (None: not MLflow's to repair here)."""

    found: str
    repaired: str
    fix: Callable[[], None] | None


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class StageRegistry:
    """A model's versions and stages in MLflow. With ``store``, every stage change is first
    appended to the store's transition log (model_registry/history.py), which then decides
    what is eligible; MLflow's tags mirror it and must agree with it."""

    def __init__(self, tracking_uri: str, model_name: str, store: ModelStore | None = None):
        self.tracking_uri = tracking_uri
        self.model = model_name
        self.store = store
        self._client = None
        # What status reads, without MLflow's import where the database allows (railyard/mlflow_reads.py).
        self.reads = open_reads(tracking_uri, lambda: self.client)

    @property
    def client(self):
        """MLflow's client, made on first use (every write, and reads the fast path does not serve)."""
        if self._client is None:
            self._client = mlflow_client(self.tracking_uri)
        return self._client

    # -- registration ------------------------------------------------------------------

    def register(self, version: int, source: str, run_id: str, lineage: dict[str, str], description: str) -> int:
        """Register store version N as MLflow version N, a candidate with its lineage tags.

        Numbers the store skipped (an interrupted publication) become rejected filler versions,
        so the numbering stays aligned and the gap is explained. A re-run for the same run id
        returns the existing version. Stage, first history entry and lineage are written with
        the version itself, so a version is never visible without them.
        """
        self._ensure_registered_model()
        latest = self._latest_number()
        if latest >= version:
            existing = self.client.get_model_version(self.model, str(version))
            if existing.run_id == run_id:
                self._link_run(version, run_id)  # an earlier attempt may have stopped before it
                return version
            raise RegistryOutOfSync(
                f"MLflow already has {self.model} version {version} (run {existing.run_id}), but the store "
                f"published version {version} for run {run_id}: the registry and the store disagree"
            )
        self._fill_gaps(latest, version, source)
        tags = _history_tags(self._log_first(version, Stage.CANDIDATE, "published and registered"))
        tags |= {f"{TAG_PREFIX}{key}": str(value) for key, value in lineage.items()}
        created = self.client.create_model_version(
            self.model, source=source, run_id=run_id, tags=tags, description=description
        )
        self._check_number(created.version, version)
        self._link_run(version, run_id)
        return version

    def _link_run(self, version: int, run_id: str) -> None:
        """Show the version in its run's Models column (MLflow 3's UI): a logged model of the
        run, without artifacts (the SavedModel is the run's `saved_model` artifact and the
        store's version), naming the version. Idempotent."""
        from mlflow.entities import LoggedModelStatus

        experiment_id = self.client.get_run(run_id).info.experiment_id
        name = f"{self.model}-v{version}"
        found = self.client.search_logged_models([experiment_id], filter_string=f"source_run_id = '{run_id}'")
        if any(model.name == name for model in found):
            return
        link = json.dumps([{"name": self.model, "version": str(version)}])
        logged = self.client.create_logged_model(
            experiment_id, name=name, source_run_id=run_id, tags={MODEL_VERSIONS_TAG: link}
        )
        self.client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)

    def restore(self, sources: dict[int, str], production: int | None, actor: str) -> None:
        """Rebuild a lost registry from the store: version N (``sources``: number → store URI).

        A version the store's transition log knows gets its stage and whole history from it.
        Otherwise nothing is guessed: the version `stable` serves becomes production again,
        every other one is archived without a production entry (no rollback to it) and says why.
        """
        if self._numbers():
            raise RegistryOutOfSync(f"MLflow already has versions of {self.model}: restore only into an empty registry")
        self._ensure_registered_model()
        logged = {v: Stage(entries[-1]["stage"]) for v, entries in self._logged_history().items()}
        if logged:  # the transition log survived: it says each version's stage
            production = next((v for v, stage in logged.items() if stage is Stage.PRODUCTION), None)
        latest = 0
        for version in sorted(sources):
            self._fill_gaps(latest, version, sources[version])
            stage = logged.get(version) or (Stage.PRODUCTION if version == production else Stage.ARCHIVED)
            known = "history in the store's transition log" if version in logged else "earlier history unknown"
            reason = f"restored from the store by {actor} after the tracking database was lost; {known}"
            entries = self._log_first(version, stage, reason)
            created = self.client.create_model_version(
                self.model, source=sources[version], tags=_history_tags(entries), description=reason
            )
            self._check_number(created.version, version)
            latest = version
        if self.store is not None and (records := self.store.transitions(self.model)):
            # The new database takes the log as it stands; `status --verify-history` says if it is not intact.
            self.client.set_registered_model_tag(self.model, HISTORY_HEAD_TAG, record_hash(records[-1]))
        if production is not None:
            for alias in ALIASES[Stage.PRODUCTION]:
                self.client.set_registered_model_alias(self.model, alias, str(production))
            self.client.set_model_version_tag(self.model, str(production), SERVING_LABEL_TAG, "stable")

    def _ensure_registered_model(self) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.create_registered_model(self.model)
        except MlflowException as error:
            if error.error_code != "RESOURCE_ALREADY_EXISTS":
                raise

    def _fill_gaps(self, latest: int, version: int, source: str) -> None:
        """Numbers the store skipped (an interrupted publication) become rejected fillers."""
        for gap in range(latest + 1, version):
            reason = f"store version {gap} was never completed (interrupted publication)"
            filler = self.client.create_model_version(
                self.model,
                source=source,
                description=f"store version {gap} was never completed",
                tags=_history_tags(self._log_first(gap, Stage.REJECTED, reason)),
            )
            self._check_number(filler.version, gap)

    def _latest_number(self) -> int:
        versions = self.client.search_model_versions(f"name = '{self.model}'")
        return max((int(v.version) for v in versions), default=0)

    def _check_number(self, created, expected: int) -> None:
        if int(created) != expected:
            raise RegistryOutOfSync(f"MLflow created {self.model} version {created}, expected {expected}")

    # -- stages ------------------------------------------------------------------------

    def stage(self, version: int) -> Stage:
        """The version's stage: the transition log's when it knows the version."""
        return _stage(self._tags(version), self._logged_history().get(version))

    def history(self, version: int) -> list[dict]:
        """Who moved the version to which stage, when and why: the transition log's entries
        (MLflow's tags only for what came before the log)."""
        return mirrored_history(_history(self._tags(version)), self._logged_history().get(version))

    def lineage(self, version: int) -> dict[str, str]:
        """The railyard.* tags other than stage bookkeeping, without the prefix."""
        return {
            key.removeprefix(TAG_PREFIX): value
            for key, value in self._tags(version).items()
            if key.startswith(TAG_PREFIX) and not key.startswith(TRANSITION_PREFIX) and key not in _BOOKKEEPING
        }

    def set_lineage(self, version: int, **values: str) -> None:
        for key, value in values.items():
            self.client.set_model_version_tag(self.model, str(version), f"{TAG_PREFIX}{key}", str(value))

    def release_run(self, version: int) -> dict | None:
        value = self._tags(version).get(RELEASE_RUN_TAG)
        return json.loads(value) if value else None

    def set_release_run(self, version: int, owner: dict | None) -> None:
        """Record (or, with None, forget) the run carrying the version through its release."""
        if owner is None:
            self.client.delete_model_version_tag(self.model, str(version), RELEASE_RUN_TAG)
        else:
            self.client.set_model_version_tag(self.model, str(version), RELEASE_RUN_TAG, json.dumps(owner))

    def tag_release_ending(self, version: int, ending: str) -> None:
        """Say on the MLflow run behind the version how its release ended (a version restored
        from the store has no run)."""
        run_id = self.client.get_model_version(self.model, str(version)).run_id
        if run_id:
            self.client.set_tag(run_id, RELEASE_ENDED_TAG, ending)

    def all_tags(self) -> dict[int, dict[str, str]]:
        """Every version's tags, in one query."""
        return {version: tags for version, _, tags in self.reads.model_versions(self.model)}

    def known_runs(self, run_ids: Collection[str]) -> set[str]:
        """The run ids MLflow knows (a lost or replaced tracking database knows none)."""
        return self.reads.known_runs(run_ids)

    def check_transition(self, version: int, to_stage: Stage) -> Stage:
        """The current stage, if moving to ``to_stage`` is legal; IllegalTransition otherwise."""
        return self._check(version, self._version_tags(version), to_stage)

    def _check(self, version: int, tags: dict[str, str], to_stage: Stage) -> Stage:
        """Legality from the transition log when the version is in it (MLflow must agree), else
        from MLflow's tags (a version from before the log)."""
        current = Stage(tags[STAGE_TAG])
        entries = self._logged_history().get(version)
        if entries is not None:
            if entries[-1]["stage"] != current.value:
                raise HistoryMismatch(
                    f"{self.model} version {version}: MLflow says {current.value}, the transition log "
                    f"{self.store.history_uri(self.model)} says {entries[-1]['stage']}: refusing to act on it"
                )
            smoke_passed = any(entry.get("smoke_passed") for entry in entries if entry["stage"] == Stage.STAGING.value)
        else:
            entries, smoke_passed = _history(tags), tags.get(SMOKE_TAG) == "true"
        if to_stage not in LEGAL[current]:
            legal = ", ".join(sorted(stage.value for stage in LEGAL[current])) or "none: it is final"
            raise IllegalTransition(
                f"{self.model} version {version} is {current.value}: it cannot move to {to_stage.value} "
                f"(legal next stages: {legal})"
            )
        if current is Stage.STAGING and to_stage is Stage.PRODUCTION and not smoke_passed:
            raise IllegalTransition(f"{self.model} version {version} has no passed smoke tests on record")
        if current is Stage.ARCHIVED and to_stage is Stage.PRODUCTION:
            if not any(entry.get("stage") == Stage.PRODUCTION.value for entry in entries):
                raise IllegalTransition(f"{self.model} version {version} was never in production: no rollback to it")
        return current

    def transition(
        self,
        version: int,
        to_stage: Stage,
        *,
        actor: str,
        reason: str,
        flow_run_id: str | None = None,
        smoke_passed: bool | None = None,
    ) -> dict:
        """Move a version to ``to_stage``, recording who, when and why; aliases follow."""
        to_stage = Stage(to_stage)
        if to_stage is Stage.STAGING and smoke_passed is not True:
            raise IllegalTransition(f"{self.model} version {version} needs passed smoke tests to enter staging")
        tags = self._version_tags(version)
        current = self._check(version, tags, to_stage)
        if smoke_passed is not None:
            self.client.set_model_version_tag(self.model, str(version), SMOKE_TAG, str(smoke_passed).lower())
        aliases = self._aliases()
        if to_stage is Stage.PRODUCTION:
            previous = self.production_version()
            if previous is not None and previous != version:
                self._record(
                    previous,
                    self._version_tags(previous),
                    Stage.ARCHIVED,
                    actor=actor,
                    reason=f"replaced by version {version}",
                    flow_run_id=flow_run_id,
                )
                self.client.delete_model_version_tag(self.model, str(previous), SERVING_LABEL_TAG)
        entry = self._record(
            version, tags, to_stage, actor=actor, reason=reason, flow_run_id=flow_run_id, smoke_passed=smoke_passed
        )
        for alias in ALIASES.get(current, ()):
            if _holder(aliases, alias) == version:
                self.client.delete_registered_model_alias(self.model, alias)
        for alias in ALIASES.get(to_stage, ()):
            self.client.set_registered_model_alias(self.model, alias, str(version))
        if to_stage is Stage.PRODUCTION:
            self.client.set_model_version_tag(self.model, str(version), SERVING_LABEL_TAG, "stable")
        return entry

    def production_version(self) -> int | None:
        """The production version: the transition log's (MLflow's alias without a log)."""
        records = self.store.transitions(self.model) if self.store is not None else []
        if not records:
            return _holder(self._aliases(), "production")
        return _log_holder(versions_history(records), Stage.PRODUCTION)

    def previous_production(self) -> int | None:
        """The newest version other than the current production one that was once in production
        (by the transition log, which a restored registry takes whole)."""
        current, logged = self.production_version(), self._logged_history()
        for version, tags in sorted(self.all_tags().items(), reverse=True):
            history = mirrored_history(_history(tags), logged.get(version))
            if version != current and any(e.get("stage") == Stage.PRODUCTION.value for e in history):
                return version
        return None

    def versions(self) -> list[dict]:
        """Every version: its model kind, stage, the metrics of its run, who approved its
        production, its history (stage and history from the transition log), and the run that
        carries its release (``release_run``: flow run, how it waits, the review's deadline)."""
        logged, result = self._logged_history(), []
        for version, run_id, tags in sorted(self.reads.model_versions(self.model)):
            history = mirrored_history(_history(tags), logged.get(version))
            approvals = [entry.get("actor") for entry in history if entry.get("stage") == Stage.PRODUCTION.value]
            result.append(
                {
                    "version": version,
                    "kind": tags.get(f"{TAG_PREFIX}model_kind"),
                    "stage": _stage(tags, logged.get(version)).value,
                    "metrics": self.reads.run_metrics(run_id) if run_id else {},
                    "approved_by": approvals[-1] if approvals else None,
                    "history": history,
                    "release_run": json.loads(tags.get(RELEASE_RUN_TAG) or "null"),
                    "drift": tags.get(f"{TAG_PREFIX}drift"),
                    "drift_override": tags.get(f"{TAG_PREFIX}drift_override"),
                    "warm_from": tags.get(f"{TAG_PREFIX}warm_from"),
                }
            )
        return result

    # -- internals ---------------------------------------------------------------------

    def _tags(self, version: int) -> dict[str, str]:
        return self.client.get_model_version(self.model, str(version)).tags

    def _version_tags(self, version: int) -> dict[str, str]:
        """Tags of a version that must exist for a stage change."""
        from mlflow.exceptions import MlflowException

        try:
            return self._tags(version)
        except MlflowException as error:
            raise IllegalTransition(f"{self.model} version {version} is not registered") from error

    def _search(self) -> list:
        return self.client.search_model_versions(f"name = '{self.model}'")

    def _numbers(self) -> list[int]:
        return [int(v.version) for v in self._search()]

    def _record(
        self, version: int, tags: dict[str, str], to_stage: Stage, *, actor, reason, flow_run_id, smoke_passed=None
    ) -> dict:
        """Append a history entry to a version whose current tags are ``tags``, and set its stage:
        in the transition log first, then in MLflow's tags."""
        sequence = sum(1 for key in tags if key.startswith(TRANSITION_PREFIX))
        entry = _entry(Stage(tags[STAGE_TAG]), to_stage, actor=actor, reason=reason, flow_run_id=flow_run_id)
        entry = as_entry(self._log(version, entry, smoke_passed))
        self.client.set_model_version_tag(self.model, str(version), _transition_key(sequence), json.dumps(entry))
        self.client.set_model_version_tag(self.model, str(version), STAGE_TAG, to_stage.value)
        return entry

    def logged_versions(self) -> set[int]:
        """The versions the transition log has records of (none without a store)."""
        return set(self._logged_history())

    def _logged_history(self) -> dict[int, list[dict]]:
        """Each version's entries in the transition log (verified); empty without a store."""
        return versions_history(self.store.transitions(self.model)) if self.store is not None else {}

    def _log_first(self, version: int, stage: Stage, reason: str) -> list[dict]:
        """A version's first record in the log, unless an interrupted earlier attempt wrote it;
        the version's entries as the log has them (just that entry without a store)."""
        logged = self._logged_history().get(version)
        return logged or [
            self._log(version, _entry(None, stage, actor="railyard", reason=reason, flow_run_id=None), None)
        ]

    def _log(self, version: int, entry: dict, smoke_passed: bool | None) -> dict:
        """Append to the log, then note its newest record in MLflow: an edit of the last record,
        which no later record's hash covers, shows as a different head. The record as written."""
        if self.store is None:
            return entry
        record = self.store.append_transition(self.model, {"version": version, **entry, "smoke_passed": smoke_passed})
        self.client.set_registered_model_tag(self.model, HISTORY_HEAD_TAG, record_hash(record))
        return record

    def mirror_log(self) -> list[str]:
        """Make MLflow's stages, histories and aliases say what the transition log says (after
        an edit of MLflow's tags, or a crash between the log and the tags); one sentence per change."""
        said = []
        for drift in self._drifts():
            if drift.fix is not None:
                drift.fix()
                said.append(drift.repaired)
        return said

    def verify_history(self) -> tuple[int, list[str]]:
        """The number of records in the transition log (its chain verified: HistoryTampered
        otherwise) and every way MLflow differs from it: exactly what ``mirror_log`` would
        repair, and a last record that is not the one Railyard wrote last."""
        if self.store is None:
            raise ValueError("no model store: there is no transition log to verify")
        records = self.store.transitions(self.model)
        problems = [drift.found for drift in self._drifts(records)]
        head = self.client.get_registered_model(self.model).tags.get(HISTORY_HEAD_TAG) if records else None
        if records and head != record_hash(records[-1]):
            problems.append(
                f"the log's last record ({len(records) - 1}) is not the one Railyard wrote last (edited or removed)"
            )
        return len(records), problems

    def _drifts(self, records: list[dict] | None = None) -> list[Drift]:
        """Every difference between MLflow and the transition log: each logged version's stage
        tag and history tags (every field of every entry), and the aliases."""
        if records is None:
            records = self.store.transitions(self.model) if self.store is not None else []
        logged = versions_history(records)
        if not logged:
            return []
        tags, drifts = self.all_tags(), []
        for version, entries in sorted(logged.items()):
            stage = entries[-1]["stage"]
            if version not in tags:  # published, not yet registered: register_stranded's business
                drifts.append(Drift(f"version {version}: the log says {stage}, MLflow does not have it", "", None))
                continue
            mirrored = _history(tags[version])
            expected = mirrored_history(mirrored, entries)
            if found := entry_disagreements(version, mirrored, expected):
                drifts.append(
                    Drift(
                        "; ".join(problem for problem, _ in found),
                        "; ".join(repaired for _, repaired in found) + ": MLflow's history follows the log",
                        partial(self._rewrite_history, version, tags[version], expected),
                    )
                )
            if (said := tags[version].get(STAGE_TAG)) != stage:
                drifts.append(
                    Drift(
                        f"version {version}: the log says {stage}, MLflow says {said}",
                        f"version {version}: MLflow said {said}, the transition log says {stage}: MLflow follows the log",
                        partial(self.client.set_model_version_tag, self.model, str(version), STAGE_TAG, stage),
                    )
                )
        registered = {version: entries for version, entries in logged.items() if version in tags}
        aliases = self._aliases()
        for stage, names in ALIASES.items():
            wanted = _log_holder(registered, stage)
            for name in names:
                if _holder(aliases, name) != wanted:
                    said = f"alias {name} %s {aliases.get(name)}, the transition log says {wanted}"
                    drifts.append(
                        Drift(
                            said % "points at",
                            said % "pointed at" + ": moved it",
                            partial(self._set_alias, name, wanted),
                        )
                    )
        return drifts

    def _rewrite_history(self, version: int, tags: dict[str, str], entries: list[dict]) -> None:
        """Make the version's history tags say ``entries`` (and nothing else)."""
        for key, value in _history_tags(entries).items():
            if key != STAGE_TAG and tags.get(key) != value:
                self.client.set_model_version_tag(self.model, str(version), key, value)
        for key in set(tags) - set(_history_tags(entries)):
            if key.startswith(TRANSITION_PREFIX):
                self.client.delete_model_version_tag(self.model, str(version), key)

    def _set_alias(self, name: str, version: int | None) -> None:
        if version is None:
            self.client.delete_registered_model_alias(self.model, name)
        else:
            self.client.set_registered_model_alias(self.model, name, str(version))

    def _aliases(self) -> dict[str, str]:
        """The registered model's aliases; none before its first registration."""
        return self.reads.aliases(self.model)


def _holder(aliases: dict[str, str], alias: str) -> int | None:
    holder = aliases.get(alias)
    return int(holder) if holder is not None else None


def _log_holder(history: dict[int, list[dict]], stage: Stage) -> int | None:
    """The version holding ``stage`` by the log (the newest, should there be two)."""
    return max((version for version, entries in history.items() if entries[-1]["stage"] == stage.value), default=None)


def _stage(tags: dict[str, str], logged: list[dict] | None) -> Stage:
    return Stage(logged[-1]["stage"] if logged else tags[STAGE_TAG])


def _history(tags: dict[str, str]) -> list[dict]:
    """MLflow's history tags of a version, in order (an entry that is not a JSON object, e.g.
    edited by hand, reads as one with no fields, which disagrees with any log entry)."""
    return [_parse_entry(tags[key]) for key in sorted(tags) if key.startswith(TRANSITION_PREFIX)]


def _parse_entry(value: str) -> dict:
    try:
        entry = json.loads(value)
    except ValueError:
        return {}
    return entry if isinstance(entry, dict) else {}


def _transition_key(sequence: int) -> str:
    return f"{TRANSITION_PREFIX}{sequence:04d}"


def _entry(current: Stage | None, to_stage: Stage, *, actor: str, reason: str, flow_run_id: str | None) -> dict:
    return {
        "stage": to_stage.value,
        "from": current.value if current else None,
        "actor": actor,
        "time": utc_now(),
        "reason": reason[:_REASON_LIMIT],
        "flow_run_id": flow_run_id,
    }


def _history_tags(entries: list[dict]) -> dict[str, str]:
    """The stage tag and history tags that mirror a version's entries."""
    history = {_transition_key(index): json.dumps(as_entry(entry)) for index, entry in enumerate(entries)}
    return history | {STAGE_TAG: entries[-1]["stage"]}
