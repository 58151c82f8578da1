"""The local server as `railyard serve` runs it, through the real CLI in subprocesses: two homes on
one machine, ports that another program holds, a broken config file, a state file that names
the wrong process, and a foreground server reached through configured endpoints."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.local_server import background
from infra.tfserving.client import ServingClient, ServingError
from infra.tfserving.model_config import write_config_atomically
from infra.tfserving.protocol import DEFAULT_GRPC_PORT, DEFAULT_REST_PORT
from railyard.processes import process_alive
from tests.support import REPO_ROOT
from tests.support.ports import held
from tests.support.serving_fixtures import MODEL_NAME, model_config

pytest_plugins = ["tests.support.serving_fixtures"]

PORT_SETTINGS = ("RAILYARD_LOCAL_SERVING_REST_PORT", "RAILYARD_LOCAL_SERVING_GRPC_PORT")


class Home:
    """A RAILYARD_HOME driven through the CLI; its local servers are stopped afterwards."""

    def __init__(self, root: Path) -> None:
        self.path = root
        self.serving = root / "serving"
        self.models = self.serving / "models"
        self.env = {k: v for k, v in os.environ.items() if k not in PORT_SETTINGS and not k.startswith("RAILYARD_")}
        self.env |= {"RAILYARD_HOME": str(root), "RAILYARD_LOCAL_ONLINE_STORE_PORT": "0", "PYTHONPATH": str(REPO_ROOT)}

    def railyard(self, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "cli", *args],
            env=self.env | (env or {}),
            capture_output=True,
            text=True,
            timeout=600,
            cwd=self.path,
        )

    def state(self) -> background.LocalServerState | None:
        return background.read_state(self.serving)

    def serve_version_1(self, source_root: Path) -> None:
        """Version 1 of the tiny model in the model root, labelled stable in its config."""
        shutil.copytree(source_root / MODEL_NAME / "1", self.models / MODEL_NAME / "1")
        write_config_atomically(self.models / "models.config", model_config(self.models, {1}, {"stable": 1}))


@pytest.fixture
def homes(tmp_path: Path) -> Iterator[callable]:
    made: list[Home] = []

    def make(name: str) -> Home:
        made.append(Home(tmp_path / name))
        made[-1].path.mkdir()
        return made[-1]

    yield make
    for home in made:
        background.stop(home.serving)


def answers(rest_url: str) -> int | None:
    """The HTTP status of the model's status page; None when nothing answers."""
    try:
        with urllib.request.urlopen(f"{rest_url}/v1/models/{MODEL_NAME}", timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None


def test_two_homes_on_one_machine_each_get_a_server_with_no_settings(homes, model_root):
    """The first home's server takes TF Serving's ports (8501/8500, unless another program has
    them); the second home's takes free ports, says which, and its clients find them."""
    first, second = homes("first"), homes("second")
    for home in (first, second):
        home.serve_version_1(model_root)
        started = home.railyard("serve", "--background")
        assert started.returncode == 0, started.stderr
        state = home.state()
        assert f"REST {state.rest_url}, gRPC {state.grpc_target}" in started.stdout
    one, two = first.state(), second.state()
    assert {one.rest_port, one.grpc_port}.isdisjoint({two.rest_port, two.grpc_port})
    assert (two.rest_port, two.grpc_port) != (DEFAULT_REST_PORT, DEFAULT_GRPC_PORT)  # the first home has them
    for home, state in ((first, one), (second, two)):
        assert answers(state.rest_url) == 200
        # Its own server, through its own state file, takes its own token.
        with ServingClient(state.grpc_target, state.rest_url, reload_token=background.reload_token(home.serving)) as c:
            c.reload_config(model_config(home.models, {1}, {"stable": 1, "canary": 1}))
            assert c.label_version(MODEL_NAME, "canary") == 1
    with ServingClient(two.grpc_target, two.rest_url, attempts=1) as other_homes_client:
        with pytest.raises(ServingError) as refused:
            other_homes_client.reload_config(model_config(second.models, {1}, {}))
    assert refused.value.code == "UNAUTHENTICATED" and "RAILYARD_HOME" in str(refused.value)


def test_unset_ports_move_aside_when_tf_servings_are_held(homes, model_root):
    home = homes("home")
    home.serve_version_1(model_root)
    with held(DEFAULT_REST_PORT, DEFAULT_GRPC_PORT):
        started = home.railyard("serve", "--background")
    assert started.returncode == 0, started.stderr
    state = home.state()
    assert DEFAULT_REST_PORT not in (state.rest_port, state.grpc_port) and DEFAULT_GRPC_PORT != state.grpc_port
    assert answers(state.rest_url) == 200
    log = (home.serving / background.LOG_FILE).read_text()
    assert f"REST port {DEFAULT_REST_PORT}: the port is taken by " in log


@pytest.mark.parametrize(
    ("how", "setting"),
    [
        ({"args": ("--rest-port", "{rest}")}, "--rest-port"),
        ({"env": {"RAILYARD_LOCAL_SERVING_GRPC_PORT": "{grpc}"}}, "RAILYARD_LOCAL_SERVING_GRPC_PORT"),
    ],
)
def test_a_port_set_and_taken_is_refused_before_anything_starts(homes, model_root, how, setting):
    first, second = homes("first"), homes("second")
    first.serve_version_1(model_root)
    assert first.railyard("serve", "--background", "--rest-port", "0", "--grpc-port", "0").returncode == 0
    taken = first.state()
    ports = {"rest": taken.rest_port, "grpc": taken.grpc_port}
    args = [arg.format(**ports) for arg in how.get("args", ())]
    env = {key: value.format(**ports) for key, value in how.get("env", {}).items()}
    refused = second.railyard("serve", "--background", *args, env=env)
    assert refused.returncode == 2, refused.stderr
    error, next_step = refused.stderr.strip().splitlines()[-2:]
    port = taken.rest_port if setting == "--rest-port" else taken.grpc_port
    assert error.startswith(f"error: port {port} ({setting}) is taken by pid {taken.pid} (")
    assert "infra.local_server" in error and str(first.serving) in error  # what holds it: the first home's server
    assert next_step.startswith(f"next: set {setting} to a free port (0: any free port), or leave it unset")
    assert not second.serving.exists() or not (second.serving / background.LOG_FILE).exists()  # nothing started
    assert answers(taken.rest_url) == 200


def test_a_server_that_cannot_listen_says_why_on_one_line(model_root, tmp_path):
    """The port was free when checked and taken when the server bound it: the child's own
    reason reaches the caller, naming the port and what holds it."""
    config_path = tmp_path / "models" / "models.config"
    with held(0) as (port,):
        with pytest.raises(background.LocalServerError) as error:
            background.ensure_local_server(tmp_path / "state", config_path, rest_port=port, grpc_port=0)
    message = str(error.value)
    assert message.startswith(
        f"the local serving process exited: cannot listen for REST on 127.0.0.1:{port}: "
        f"the port is taken by pid {os.getpid()} ("
    )
    assert "\n" not in message and message.endswith(f"(log: {tmp_path / 'state' / background.LOG_FILE})")


def test_a_garbage_config_file_is_named_and_the_live_server_keeps_serving(homes, model_root):
    home = homes("home")
    home.serve_version_1(model_root)
    assert home.railyard("serve", "--background", "--rest-port", "0", "--grpc-port", "0").returncode == 0
    state = home.state()
    config_path = home.models / "models.config"
    config_path.write_bytes(b"\xff\xfe\x00garbage\x81")

    status = home.railyard("status")
    assert status.returncode == 0, status.stderr
    assert f"serving could not be checked or repaired: {config_path} is not a valid TF Serving ModelServerConfig: " in (
        status.stdout
    )
    assert "not UTF-8 text" in status.stdout and "serving: stable -> 1" in status.stdout  # still served
    assert answers(state.rest_url) == 200

    assert home.railyard("serve", "--stop").returncode == 0
    status = home.railyard("status")
    assert status.returncode == 0, status.stderr
    assert (
        f"serving: the local server is not running and cannot start: {config_path} is not a valid "
        "TF Serving ModelServerConfig: not UTF-8 text"
    ) in status.stdout
    restart = home.railyard("serve", "--background")
    assert restart.returncode == 1
    error, next_step = restart.stderr.strip().splitlines()[-2:]
    assert error.startswith(f"error: {config_path} is not a valid TF Serving ModelServerConfig: not UTF-8 text")
    assert next_step.startswith("next: fix the file, or move it aside")
    assert home.state() is None and config_path.read_bytes() == b"\xff\xfe\x00garbage\x81"


def test_stop_finds_the_server_a_wrong_state_file_does_not_name(homes, model_root):
    """The state file names a pid that is not the server's: the server of this folder is found
    by its ports and command line and stopped, not left serving without a state file."""
    home = homes("home")
    home.serve_version_1(model_root)
    assert home.railyard("serve", "--background", "--rest-port", "0", "--grpc-port", "0").returncode == 0
    real = home.state()
    gone = _finished_pid()
    tampered = json.loads((home.serving / background.STATE_FILE).read_text())
    tampered["pid"] = tampered["process"]["pid"] = gone
    (home.serving / background.STATE_FILE).write_text(json.dumps(tampered))

    try:
        stopped = home.railyard("serve", "--stop")
        assert stopped.returncode == 0, stopped.stderr
        assert stopped.stdout.splitlines()[0] == f"stopped the local server (pid {real.pid})"
        assert not process_alive(real.process) and answers(real.rest_url) is None
        assert home.state() is None
    finally:
        if process_alive(real.process):  # left serving: the test started it, the test ends it
            os.kill(real.pid, signal.SIGTERM)


def test_a_stale_state_file_never_touches_another_program_on_its_ports(homes):
    home = homes("home")
    with held(0) as (port,):
        home.serving.mkdir(parents=True)
        stale = {"host": socket.gethostname(), "pid": _finished_pid(), "start": 1}
        background.write_state(home.serving, background.LocalServerState(stale["pid"], port, port, "x", stale))
        stopped = home.railyard("serve", "--stop")
        assert stopped.returncode == 0 and stopped.stdout.splitlines() == ["no local server is running"]
        assert home.state() is None  # and this process, holding the port, was not signalled


def test_runs_reach_their_homes_foreground_server_through_configured_endpoints(homes, model_root):
    """`railyard serve` in the foreground, RAILYARD_SERVING_GRPC/_REST pointed at it: the home's
    runs send its reload token (it is this home's server, by its state file's ports)."""
    from infra.rollout.deploy import resolve_target
    from railyard.settings import Settings

    home = homes("home")
    home.serve_version_1(model_root)
    server = subprocess.Popen(
        [sys.executable, "-m", "cli", "serve", "--rest-port", "0", "--grpc-port", "0"],
        env=home.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=home.path,
    )
    try:
        state = _started(home, server)
        settings = Settings(home=home.path, serving_grpc=state.grpc_target, serving_rest=state.rest_url)
        target = resolve_target(settings)
        with target.client(attempts=1) as client:
            client.reload_config(model_config(home.models, {1}, {"stable": 1, "canary": 1}))
            assert client.label_version(MODEL_NAME, "canary") == 1
        elsewhere = Settings(home=home.path, serving_grpc="127.0.0.1:1", serving_rest="http://127.0.0.1:1")
        assert resolve_target(elsewhere).reload_token is None  # not this home's server: no token sent
    finally:
        server.terminate()
        stdout, _ = server.communicate(timeout=60)
    assert stdout.startswith(f"local server pid {server.pid}: REST {state.rest_url}, gRPC {state.grpc_target}")
    assert home.state() is None


def _started(home: Home, server: subprocess.Popen, timeout_s: float = 300) -> background.LocalServerState:
    """The state file of ``server`` once both its ports listen."""
    deadline = time.monotonic() + timeout_s
    while (state := home.state()) is None or state.pid != server.pid:
        assert server.poll() is None, server.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the foreground server did not start"
        time.sleep(0.2)
    return state


def _finished_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    return done.pid
