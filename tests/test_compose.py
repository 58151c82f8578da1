"""The production stack files: compose invariants and TF Serving's static config files.

The `docker compose` plugin is not installed on our machines, so the compose file is checked
by a YAML load plus the invariants below; `docker compose config` runs too where the plugin exists.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
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
    tfserving_command_args,
    tfserving_entrypoint,
    tfserving_healthcheck_test,
)

INFRA = Path(__file__).resolve().parents[1] / "infra"
COMPOSE_FILE = INFRA / "docker-compose.yml"
ENV_EXAMPLE = INFRA / ".env.example"

LOOPBACK_HOST = re.compile(r"127\.0\.0\.1|\$\{[A-Z][A-Z0-9_]*:-127\.0\.0\.1\}")
SECRET_KEY = re.compile(r"password|secret|token|access_key|api_key|credential|private_key", re.IGNORECASE)
SECRET_VALUE = re.compile(r"AKIA[0-9A-Z]{16}|-----BEGIN [A-Z ]*PRIVATE KEY-----")
ENV_REFERENCE = re.compile(r"^\$\{[A-Z][A-Z0-9_]*(:?[-?][^}]*)?\}$")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def unescape(value: str) -> str:
    """Compose turns `$$` into a literal `$`."""
    return value.replace("$$", "$")


def seconds(duration: str) -> int:
    match = re.fullmatch(r"(\d+)s", duration)
    assert match, f"use whole seconds like '10s', got {duration!r}"
    return int(match.group(1))


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


def secret_literals(node, path: str = "") -> list[str]:
    """Secret-looking keys with literal values, and values that look like keys themselves."""
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
            if isinstance(item, str) and "=" in item:  # environment in list form: KEY=value
                key, value = item.split("=", 1)
                if SECRET_KEY.search(key) and not ENV_REFERENCE.match(value):
                    found.append(f"{path}[{index}]")
            found += secret_literals(item, f"{path}[{index}]")
    elif isinstance(node, str) and SECRET_VALUE.search(node):
        found.append(path)
    return found


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
    targets = sorted(int(str(port).rsplit(":", 1)[-1]) for port in service["ports"])
    assert targets == [GRPC_PORT, REST_PORT]


def test_no_stray_dollar_for_compose_to_interpolate(compose):
    """An unescaped `$@` would reach the container as an empty string."""
    service = compose["services"]["tfserving"]
    for part in service["entrypoint"] + service["command"] + service["healthcheck"]["test"]:
        assert "$" not in part.replace("$$", ""), part


def test_published_ports_bind_to_loopback(compose):
    assert non_loopback_ports(compose) == []
    assert any(service.get("ports") for service in compose["services"].values())


def test_port_check_catches_open_bindings():
    exposed = {"services": {"x": {"ports": ["8500:8500", "0.0.0.0:9000:9000", "${BIND:-0.0.0.0}:1:1"]}}}
    assert non_loopback_ports(exposed) == ["x: 8500:8500", "x: 0.0.0.0:9000:9000", "x: ${BIND:-0.0.0.0}:1:1"]


def test_every_service_has_a_health_check_and_a_restart_policy(compose):
    for name, service in compose["services"].items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no health check"
        restart = service.get("restart")
        assert restart in {"unless-stopped", "always", "on-failure"}, f"{name} has no restart policy"


def test_images_are_pinned_to_a_version(compose):
    for name, service in compose["services"].items():
        image = service["image"]
        repository, _, tag = image.rpartition(":")
        assert repository and "/" not in tag, f"{name}: image {image!r} has no tag"
        assert tag != "latest" and re.search(r"\d+\.\d+", tag), f"{name}: {image!r} is not a version tag"


def test_model_root_volume_is_shared_and_mounted(compose):
    assert compose["volumes"][MODEL_ROOT_VOLUME] == {"name": MODEL_ROOT_VOLUME}  # no project prefix
    assert f"{MODEL_ROOT_VOLUME}:{MODEL_ROOT}" in compose["services"]["tfserving"]["volumes"]


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


def test_no_secret_looking_literals(compose):
    assert secret_literals(compose) == []
    assert secret_literals(yaml.safe_load(ENV_EXAMPLE.read_text().replace("=", ": ")) or {}) == []


def test_secret_check_catches_literals():
    leaky = {
        "services": {
            "minio": {
                "environment": {"MINIO_ROOT_PASSWORD": "hunter2", "MINIO_ROOT_USER": "${MINIO_ROOT_USER:?}"}
            },
            "mlflow": {"environment": ["AWS_SECRET_ACCESS_KEY=abc", "AWS_ACCESS_KEY_ID=${KEY}"]},
            "worker": {"command": ["--key=AKIAABCDEFGHIJKLMNOP"]},
        }
    }
    assert secret_literals(leaky) == [
        ".services.minio.environment.MINIO_ROOT_PASSWORD",
        ".services.mlflow.environment[0]",
        ".services.worker.command[0]",
    ]


def strings_in(node) -> list[str]:
    if isinstance(node, dict):
        return [text for key, value in node.items() for text in strings_in(key) + strings_in(value)]
    if isinstance(node, list):
        return [text for item in node for text in strings_in(item)]
    return [node] if isinstance(node, str) else []


def test_env_example_lists_every_variable_the_compose_file_reads(compose):
    used = {name for text in strings_in(compose) for name in re.findall(r"\$\{([A-Z][A-Z0-9_]*)", text)}
    listed = {
        line.split("=", 1)[0]
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert used and used == listed


def test_docker_compose_config_accepts_the_file():
    """Only where the compose plugin exists (not on our machines); the checks above always run."""
    docker_cli = shutil.which("docker")
    plugin = docker_cli and subprocess.run([docker_cli, "compose", "version"], capture_output=True)
    if not plugin or plugin.returncode:
        pytest.skip("docker compose plugin not installed: compose file checked by YAML + invariants only")
    result = subprocess.run(
        [docker_cli, "compose", "-f", str(COMPOSE_FILE), "config", "--quiet"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


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
