"""TFServingLauncher against a mocked Docker engine (none runs on our machines)."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path
from unittest import mock

import docker
import pytest

from infra.docker_launcher import (
    CONFIG_MOUNT,
    DEFAULT_CONFIG_DIR,
    MODELS_CONFIG,
    PROMETHEUS_METRICS_PATH,
    REST_PORT,
    TFSERVING_IMAGE,
    TFSERVING_PLATFORM,
    ContainerStatus,
    DockerEngineUnavailable,
    LauncherError,
    TFServingLauncher,
    tfserving_command_args,
    tfserving_entrypoint,
    tfserving_healthcheck_test,
)
from tests.support.local_http import QuietHandler, serve_http


def make_container(status: str, health: str | None = None, *, image=TFSERVING_IMAGE, cmd=None):
    container = mock.MagicMock(name="container")
    container.status = status
    state = {"Status": status, **({"Health": {"Status": health}} if health else {})}
    container.attrs = {
        "State": state,
        "Config": {"Image": image, "Cmd": tfserving_command_args() if cmd is None else cmd},
    }
    return container


@pytest.fixture
def client():
    client = mock.MagicMock(name="docker-client")
    client.containers.get.side_effect = docker.errors.NotFound("no such container")
    with mock.patch("docker.from_env", return_value=client):
        yield client


def test_command_args_say_what_design_requires():
    args = tfserving_command_args()
    assert "--model_config_file=/models/models.config" in args
    assert "--model_config_file_poll_wait_seconds=0" in args  # never poll the file (RPC reloads)
    assert "--file_system_poll_wait_seconds=1" in args  # 0 would never load reloaded versions
    assert "--max_num_load_retries=1" in args
    assert "--enable_batching=true" in args
    assert "--batching_parameters_file=/config/batching_parameters.txt" in args
    assert "--monitoring_config_file=/config/monitoring.config" in args
    assert len({arg.split("=")[0] for arg in args}) == len(args), "a flag is given twice"


def test_start_pulls_missing_image_and_creates_the_container(client):
    client.images.get.side_effect = docker.errors.ImageNotFound("absent")
    created = make_container("created")
    client.containers.create.return_value = created

    def now_running():
        created.status = "running"
        created.attrs["State"] = {"Status": "running", "Health": {"Status": "starting"}}

    created.reload.side_effect = now_running

    status = TFServingLauncher().start()

    client.images.pull.assert_called_once_with(TFSERVING_IMAGE, platform=TFSERVING_PLATFORM)
    spec = client.containers.create.call_args.kwargs
    assert spec["image"] == "tensorflow/serving:2.21.0"
    assert spec["name"] == "railyard-tfserving"
    assert spec["ports"] == {"8500/tcp": ("127.0.0.1", 8500), "8501/tcp": ("127.0.0.1", 8501)}
    assert spec["volumes"]["railyard-models"] == {"bind": "/models", "mode": "rw"}
    assert spec["volumes"][str(DEFAULT_CONFIG_DIR)] == {"bind": "/config", "mode": "ro"}
    assert spec["entrypoint"] == tfserving_entrypoint()
    assert spec["command"] == tfserving_command_args()
    assert spec["healthcheck"]["test"] == tfserving_healthcheck_test()
    assert spec["restart_policy"] == {"Name": "unless-stopped"}
    created.start.assert_called_once()
    assert status == ContainerStatus("running", "starting")


def test_start_uses_a_present_image_and_custom_ports(client):
    client.containers.create.return_value = make_container("created")
    launcher = TFServingLauncher(bind_host="10.0.0.5", grpc_port=9500, rest_port=9501, model_root_volume="/srv/models")
    launcher.start()
    client.images.pull.assert_not_called()
    spec = client.containers.create.call_args.kwargs
    assert spec["ports"] == {"8500/tcp": ("10.0.0.5", 9500), "8501/tcp": ("10.0.0.5", 9501)}
    assert spec["volumes"]["/srv/models"] == {"bind": "/models", "mode": "rw"}


def test_start_reuses_a_running_container(client):
    running = make_container("running", "healthy")
    client.containers.get.side_effect = None
    client.containers.get.return_value = running

    assert TFServingLauncher().start() == ContainerStatus("running", "healthy")
    client.containers.create.assert_not_called()
    running.start.assert_not_called()


def test_start_restarts_an_exited_container(client):
    exited = make_container("exited")
    client.containers.get.side_effect = None
    client.containers.get.return_value = exited
    exited.reload.side_effect = lambda: setattr(exited, "status", "running")

    assert TFServingLauncher().start().state == "running"
    exited.start.assert_called_once()
    client.containers.create.assert_not_called()


@pytest.mark.parametrize(
    "left_over",
    [
        make_container("running", image="tensorflow/serving:2.19.1"),
        make_container("exited", cmd=["--port=8500", "--model_config_file_poll_wait_seconds=60"]),
    ],
)
def test_start_refuses_a_container_with_other_image_or_args(client, left_over):
    client.containers.get.side_effect = None
    client.containers.get.return_value = left_over
    with pytest.raises(LauncherError, match=r"different .*stop\(remove=True\)"):
        TFServingLauncher().start()
    left_over.start.assert_not_called()


def test_stop_status_and_logs(client):
    container = make_container("running", "healthy")
    client.containers.get.side_effect = None
    client.containers.get.return_value = container
    launcher = TFServingLauncher()

    assert launcher.status() == ContainerStatus("running", "healthy")

    container.logs.return_value = b"Running gRPC ModelServer at 0.0.0.0:8500 ...\n"
    assert "ModelServer" in launcher.logs(tail=20)
    container.logs.assert_called_once_with(tail=20)

    def stopped():
        container.status = "exited"
        container.attrs["State"] = {"Status": "exited"}

    container.reload.side_effect = stopped
    assert launcher.stop(timeout=3) == ContainerStatus("exited", None)
    container.stop.assert_called_once_with(timeout=3)

    assert launcher.stop(remove=True) == ContainerStatus("absent")
    container.remove.assert_called_once()


def test_absent_container(client):
    launcher = TFServingLauncher()
    assert launcher.status() == ContainerStatus("absent")
    assert launcher.stop() == ContainerStatus("absent")
    with pytest.raises(LauncherError, match="no container named 'railyard-tfserving'"):
        launcher.logs()


def test_no_engine_for_real(monkeypatch, tmp_path: Path):
    """The real SDK against a socket nobody listens on: fails the same way with or without Docker."""
    socket = f"unix://{tmp_path / 'docker.sock'}"
    monkeypatch.setenv("DOCKER_HOST", socket)
    with pytest.raises(DockerEngineUnavailable) as raised:
        TFServingLauncher().status()
    message = str(raised.value)
    assert socket in message
    assert "Start Docker" in message and "DOCKER_HOST" in message and "railyard serve" in message


def test_no_engine_mocked(monkeypatch):
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    failure = docker.errors.DockerException("Error while fetching server API version")
    with mock.patch("docker.from_env", side_effect=failure):
        with pytest.raises(DockerEngineUnavailable, match="default socket.*fetching server API version"):
            TFServingLauncher().start()


def test_spec_is_accepted_by_the_real_sdk():
    """Run containers.create through docker-py (offline) and read the Engine API payload."""
    sdk = docker.DockerClient(base_url="unix:///nonexistent/docker.sock", version="1.44")
    with (
        mock.patch.object(sdk.api, "create_container_from_config", return_value={"Id": "abc"}) as create,
        mock.patch.object(sdk.api, "inspect_container", return_value={"Id": "abc"}),
    ):
        sdk.containers.create(**TFServingLauncher().container_spec())

    payload, name, platform = create.call_args.args
    assert (name, platform) == ("railyard-tfserving", "linux/amd64")
    assert payload["Image"] == TFSERVING_IMAGE
    assert payload["Entrypoint"] == tfserving_entrypoint()
    assert payload["Cmd"] == tfserving_command_args()
    host = payload["HostConfig"]
    assert host["PortBindings"] == {
        "8500/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8500"}],
        "8501/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8501"}],
    }
    assert sorted(host["Binds"]) == sorted(["railyard-models:/models:rw", f"{DEFAULT_CONFIG_DIR}:/config:ro"])
    assert host["RestartPolicy"] == {"Name": "unless-stopped"}
    assert payload["Healthcheck"] == {
        "Test": tfserving_healthcheck_test(),
        "Interval": 10_000_000_000,
        "Timeout": 5_000_000_000,
        "Retries": 3,
        "StartPeriod": 60_000_000_000,
    }


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"image": "tensorflow/serving"}, "pinned version tag"),
        ({"image": "tensorflow/serving:latest"}, "pinned version tag"),
        ({"bind_host": "localhost"}, "not an IP address"),
        ({"grpc_port": 0}, "grpc_port must be an integer"),
        ({"rest_port": "8501"}, "rest_port must be an integer"),
        ({"grpc_port": 8501}, "must differ"),
        ({"model_root_volume": "models/root"}, "absolute host path"),
    ],
)
def test_bad_arguments_are_named(kwargs, problem):
    with pytest.raises(LauncherError, match=problem):
        TFServingLauncher(**kwargs)


def test_config_dir_must_hold_the_server_files(tmp_path: Path):
    (tmp_path / "monitoring.config").write_text("")
    with pytest.raises(LauncherError, match="lacks batching_parameters.txt, models.config"):
        TFServingLauncher(config_dir=tmp_path)


# --- the container's shell snippets, run with bash on this machine ---------------------------


class _Metrics(QuietHandler):
    def do_GET(self):  # noqa: N802 - http.server's naming
        self.send_response(200 if self.path == PROMETHEUS_METRICS_PATH else 404)
        self.end_headers()
        self.wfile.write(b"# metrics\n")


@pytest.fixture
def metrics_server():
    with serve_http(_Metrics) as server:
        yield server.server_address[1]


def run_probe(port: int, path: str = PROMETHEUS_METRICS_PATH) -> int:
    cmd, *argv = tfserving_healthcheck_test()
    assert cmd == "CMD"
    probe = argv[-1].replace(f"/{REST_PORT} ", f"/{port} ").replace(PROMETHEUS_METRICS_PATH, path)
    return subprocess.run([*argv[:-1], probe], capture_output=True, timeout=20).returncode


def test_health_probe_needs_a_200_from_the_metrics_page(metrics_server):
    assert run_probe(metrics_server) == 0
    assert run_probe(metrics_server, path="/no/such/page") != 0


def test_health_probe_fails_on_a_closed_port():
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    assert run_probe(port) != 0


def test_entrypoint_seeds_models_config_once_and_passes_the_args(tmp_path: Path):
    models, config, bin_dir = tmp_path / "models", tmp_path / "config", tmp_path / "bin"
    for folder in (models, config, bin_dir):
        folder.mkdir()
    (config / "models.config").write_text("model_config_list {}\n")
    fake_server = bin_dir / "tensorflow_model_server"
    fake_server.write_text('#!/bin/bash\nprintf "%s\\n" "$@" > "$ARGS_OUT"\n')
    fake_server.chmod(0o755)
    shell, flag, script, zeroth = tfserving_entrypoint()
    script = script.replace(MODELS_CONFIG, f"{models}/models.config").replace(
        f"{CONFIG_MOUNT}/models.config", f"{config}/models.config"
    )
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "ARGS_OUT": str(tmp_path / "args")}

    def run() -> None:
        argv = [shell, flag, script, zeroth, *tfserving_command_args()]
        subprocess.run(argv, env=env, check=True, timeout=20)

    run()
    assert (models / "models.config").read_text() == "model_config_list {}\n"
    assert (tmp_path / "args").read_text().splitlines() == tfserving_command_args()

    (models / "models.config").write_text("written by railyard\n")
    run()
    assert (models / "models.config").read_text() == "written by railyard\n"


# ---------------------------------------------------------------- `railyard serve --docker`


def test_serve_docker_runs_tf_serving_on_the_home_model_root_and_stops_it(client, railyard_home, capsys):
    from cli.main import main

    client.containers.create.return_value = make_container("created")
    with pytest.raises(SystemExit) as started:
        main(["serve", "--docker", "--rest-port", "9501", "--grpc-port", "9500"])
    assert started.value.code == 0

    model_root = railyard_home / "serving" / "models"
    spec = client.containers.create.call_args.kwargs
    assert spec["volumes"][str(model_root)] == {"bind": "/models", "mode": "rw"}
    assert spec["ports"] == {"8500/tcp": ("127.0.0.1", 9500), "8501/tcp": ("127.0.0.1", 9501)}
    assert (model_root / "models.config").read_text() == ""  # an empty config: serve nothing yet
    client.containers.create.return_value.start.assert_called_once()
    said = capsys.readouterr().out
    assert "RAILYARD_SERVING_GRPC=127.0.0.1:9500 RAILYARD_SERVING_REST=http://127.0.0.1:9501" in said
    assert "RAILYARD_SERVING_SERVER_MODEL_ROOT=/models" in said

    running = make_container("running")
    client.containers.get.side_effect = None
    client.containers.get.return_value = running
    with pytest.raises(SystemExit) as stopped:
        main(["serve", "--docker", "--stop"])
    assert stopped.value.code == 0
    running.stop.assert_called_once()


def test_serve_docker_without_an_engine_is_one_error_line_and_exit_1(railyard_home, monkeypatch, capsys):
    from cli.main import main

    monkeypatch.setenv("DOCKER_HOST", f"unix://{railyard_home / 'docker.sock'}")
    with pytest.raises(SystemExit) as failed:
        main(["serve", "--docker"])
    assert failed.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: no Docker engine reachable") and "Traceback" not in err
