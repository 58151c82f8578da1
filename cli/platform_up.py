"""`railyard up` / `down` / `ps`: every service of the product on this machine, under one home.

The entry point decides what runs (``services``) and on which ports (``choose_ports``: recorded in
``$RAILYARD_HOME/platform/ports.json``, so a second home gets its own); ``infra/platform/supervisor``
runs them, detached, and restarts one that dies. ``down`` stops the supervisor (which stops every
service) and then whatever a killed supervisor left, each by its recorded pid.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import infra.platform.service as service
from infra.platform import postgres, supervisor
from railyard.errors import PortTaken, RailyardError, Refused
from railyard.processes import describe, holder_of, port_free, process_alive
from railyard.settings import TRACKING_FILE, Settings

REPO_ROOT = Path(__file__).resolve().parent.parent
PORTS_FILE = "ports.json"
SPEC_FILE = "spec.json"
SUPERVISOR_LOG = "supervisor.log"
# The tools' usual ports, used while free (RAILYARD_PLATFORM_USUAL_PORTS); the others get free ones.
USUAL_PORTS = {
    "prefect": 4201,  # its UI and API are opened through the proxy, on Prefect's usual port
    "proxy": 4200,
    "mlflow": 5000,
    "serving-rest": 8501,
    "serving-grpc": 8500,
    "online-store": 6399,
    "ranker": 8600,
    "scorer": 8610,
}
PORT_NAMES = ("postgres", *USUAL_PORTS)
# A port a setting chose: that port or nothing (taken: refused, naming the setting).
PORT_SETTINGS = {
    "serving-rest": ("local_serving_rest_port", "RAILYARD_LOCAL_SERVING_REST_PORT"),
    "serving-grpc": ("local_serving_grpc_port", "RAILYARD_LOCAL_SERVING_GRPC_PORT"),
    "online-store": ("local_online_store_port", "RAILYARD_LOCAL_ONLINE_STORE_PORT"),
}


class PlatformError(RailyardError):
    """The platform did not come up."""

    next_step = "see the log named; `railyard ps` shows what runs, `railyard down` stops what is left"


def folder(settings: Settings) -> Path:
    return settings.home / "platform"


def supervisor_state(settings: Settings) -> dict | None:
    """The live supervisor of this home (its state), or None."""
    state = service.read_state(folder(settings) / supervisor.SUPERVISOR_FILE)
    return state if state is not None and process_alive(state.get("process")) else None


def choose_ports(settings: Settings, recorded: dict[str, int]) -> dict[str, int]:
    """Each service's port: the one a setting chose (refused when taken), else the one recorded
    by an earlier `up` while free, else the usual one while free (if allowed), else a free one."""
    ports: dict[str, int] = {}
    for name in PORT_NAMES:
        field, variable = PORT_SETTINGS.get(name, (None, None))
        chosen = getattr(settings, field) if field else None
        if chosen:
            if not port_free(chosen):
                raise PortTaken(f"port {chosen} ({variable}) is taken by {holder_of(chosen)}", variable)
            ports[name] = chosen
            continue
        usual = USUAL_PORTS.get(name) if settings.platform_usual_ports and chosen is None else None
        taken = set(ports.values())
        candidates = [recorded.get(name), usual]
        ports[name] = next(
            (port for port in candidates if port and port not in taken and port_free(port)), None
        ) or _free_port_besides(taken)
    return ports


def _free_port_besides(taken: set[int]) -> int:
    while (port := service.free_port()) in taken:
        pass
    return port


def services(settings: Settings, ports: dict[str, int]) -> list[dict]:
    """What `railyard up` runs, stage by stage (a stage starts once the ones before are healthy)."""
    from infra.local_server import background
    from infra.online_store import valkey_process
    from infra.tfserving.model_config import ensure_config_file
    from infra.tfserving.protocol import CONFIG_FILE

    home, python, here = settings.home, sys.executable, "127.0.0.1"
    pg = home / "postgres"
    prefect_url, mlflow_url = f"http://{here}:{ports['prefect']}", f"http://{here}:{ports['mlflow']}"
    proxy_url = f"http://{here}:{ports['proxy']}"  # where people open Prefect: users authenticated
    if settings.platform_database == "postgresql":
        prefect_db = postgres.url(pg, ports["postgres"], "prefect", "+asyncpg")
        mlflow_db = postgres.url(pg, ports["postgres"], "mlflow")
    else:
        prefect_db = f"sqlite+aiosqlite:///{home / 'prefect' / 'prefect.db'}"
        mlflow_db = f"sqlite:///{home / 'mlflow.db'}"
    # Every Railyard process of the platform: this home, these ports, these servers.
    railyard_env = {
        "RAILYARD_HOME": str(home),
        # Straight to MLflow's database, as with SQLite: MLflow's server refuses a model version
        # whose source is a local path outside the run's artifacts (the local model store's).
        "RAILYARD_MLFLOW_TRACKING_URI": mlflow_db,
        "RAILYARD_LOCAL_SERVING_REST_PORT": str(ports["serving-rest"]),
        "RAILYARD_LOCAL_SERVING_GRPC_PORT": str(ports["serving-grpc"]),
        "RAILYARD_LOCAL_ONLINE_STORE_PORT": str(ports["online-store"]),
        "PREFECT_API_URL": f"{prefect_url}/api",
        "PREFECT_HOME": str(home / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    config_path = settings.resolved_serving_model_root / CONFIG_FILE
    ensure_config_file(config_path)
    serving_dir = settings.local_serving_dir
    found = []
    if settings.platform_database == "postgresql":
        found += [
            {
                "name": "postgres",
                "stage": 0,
                "command": postgres.command(pg, ports["postgres"]),
                "user": postgres.run_as(),
                "port": ports["postgres"],
                "health": {"tcp": ports["postgres"]},
                "stop_signal": "SIGINT",  # a fast shutdown: SIGTERM would wait for every client to leave
            },
            {
                "name": "databases",
                "stage": 1,
                # Also moves a home's MLflow SQLite database (from before `railyard up`) in, once.
                "command": [
                    python,
                    "-m",
                    "infra.platform.postgres",
                    str(pg),
                    str(ports["postgres"]),
                    str(home / "mlflow.db"),
                ],
                "cwd": str(REPO_ROOT),
                "once": True,
            },
        ]
    found += [
        {
            "name": "serving",
            "stage": 0,
            "command": background.command_line(
                serving_dir, config_path, ports["serving-rest"], ports["serving-grpc"], None
            ),
            "cwd": str(REPO_ROOT),
            "port": ports["serving-rest"],
            "url": f"http://{here}:{ports['serving-rest']}",
            "health": {"http": f"http://{here}:{ports['serving-rest']}/"},
        },
        {
            "name": "online-store",
            "stage": 0,
            "command": valkey_process.command(valkey_process.server_dir(settings), ports["online-store"]),
            "cwd": str(REPO_ROOT),
            "port": ports["online-store"],
            "health": {"tcp": ports["online-store"]},
        },
        {
            "name": "prefect",
            "stage": 2,
            "command": [python, "-m", "prefect", "server", "start", "--host", here, "--port", str(ports["prefect"])],
            "env": railyard_env
            | {
                "PREFECT_API_DATABASE_CONNECTION_URL": prefect_db,
                "PREFECT_UI_ENABLED": "true",
                # The UI calls this server's API through the proxy, not the default port's.
                "PREFECT_UI_API_URL": f"{proxy_url}/api",
                "PREFECT_SERVER_UI_API_URL": f"{proxy_url}/api",
                "PREFECT_SERVER_API_HOST": here,
                "PREFECT_SERVER_API_PORT": str(ports["prefect"]),
            },
            "port": ports["prefect"],
            "url": proxy_url,
            "health": {"http": f"{prefect_url}/api/health"},
        },
        {
            "name": "proxy",
            "stage": 3,
            "command": [
                *(python, "-m", "infra.platform.proxy", str(home), prefect_url, str(ports["proxy"])),
                settings.proxy_trusted_upstreams,
            ],
            "cwd": str(REPO_ROOT),
            "port": ports["proxy"],
            "url": proxy_url,
            "health": {"http": f"{proxy_url}/"},  # it answers 401 without a user: it is up
        },
        {
            "name": "mlflow",
            "stage": 2,
            "command": [
                *(python, "-m", "mlflow", "server", "--host", here, "--port", str(ports["mlflow"])),
                *("--workers", "1", "--serve-artifacts", "--artifacts-destination", str(settings.mlflow_artifacts_dir)),
            ],
            # The database URL holds the password: in the environment (owner-only), not the command line.
            "env": {"MLFLOW_BACKEND_STORE_URI": mlflow_db, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
            "port": ports["mlflow"],
            "url": mlflow_url,
            "health": {"http": f"{mlflow_url}/health"},
        },
        {
            "name": "deployments",
            "stage": 3,
            "command": [python, "-m", "cli", "deploy"],
            "cwd": str(REPO_ROOT),
            "env": railyard_env,
            "once": True,
        },
        {  # after the deployments: both would create the work pool
            "name": "worker",
            "stage": 4,
            "command": [python, "-m", "cli", "worker"],
            "cwd": str(REPO_ROOT),
            "env": railyard_env,
        },
        {
            "name": "ingester",
            "stage": 3,
            "command": [python, "-m", "cli", "ingest"],
            "cwd": str(REPO_ROOT),
            "env": railyard_env,
        },
        {
            "name": "ranker",
            "stage": 3,
            "command": [python, "-m", "cli", "rank-server", "--port", str(ports["ranker"])],
            "cwd": str(REPO_ROOT),
            "env": railyard_env,
            "port": ports["ranker"],
            "url": f"http://{here}:{ports['ranker']}",
            "health": {"http": f"http://{here}:{ports['ranker']}/healthz"},
        },
        {
            "name": "scorer",
            "stage": 3,
            "command": [python, "-m", "cli", "score-stream"],
            "cwd": str(REPO_ROOT),
            "env": railyard_env | {"RAILYARD_SCORER_METRICS_PORT": str(ports["scorer"])},
            "port": ports["scorer"],
            "url": f"http://{here}:{ports['scorer']}/metrics",
            "health": {"http": f"http://{here}:{ports['scorer']}/healthz"},
        },
    ]
    return found


def check_writable(settings: Settings) -> None:
    """Refuse a home this user cannot write, saying so (before anything is created in it)."""
    try:
        folder(settings).mkdir(parents=True, exist_ok=True)
        probe = folder(settings) / ".writable"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise Refused(f"the home {settings.home} is not writable: {error}") from None


def up(settings: Settings) -> tuple[bool, list[dict]]:
    """Bring the platform up (or find it up): (started now, what runs). Refuses a taken port set
    or an unwritable home at once; a service that fails to start is reported from its log."""
    if supervisor_state(settings) is not None:
        return False, ps(settings)
    where = folder(settings)
    check_writable(settings)
    _refuse_servers_started_alone(settings)
    leftovers = _live_services(settings)
    if leftovers:
        raise PlatformError(
            f"services of an earlier `railyard up` still run without their supervisor: "
            f"{', '.join(name for name, _ in leftovers)}; stop them with `railyard down` first"
        )
    recorded = service.read_state(where / PORTS_FILE) or {}
    ports = choose_ports(settings, recorded)
    service.write_state(where / PORTS_FILE, ports)
    if settings.platform_database == "postgresql":
        postgres.prepare(settings.home / "postgres")
    # From now on this home's Prefect is the platform's server, and its MLflow the platform's
    # database (its SQLite file is migrated into it); the URL holds the password: owner-only.
    tracking = {"prefect_api_url": f"http://127.0.0.1:{ports['prefect']}/api"}
    if settings.platform_database == "postgresql" and settings.mlflow_tracking_uri is None:
        tracking["uri"] = postgres.url(settings.home / "postgres", ports["postgres"], "mlflow")
    _write_owner_only(settings.home / TRACKING_FILE, json.dumps(tracking))
    spec = {
        "folder": str(where),
        "restart_base_s": settings.platform_restart_base_s,
        "restart_cap_s": settings.platform_restart_cap_s,
        "stop_grace_s": settings.platform_stop_grace_s,
        "start_timeout_s": settings.platform_start_timeout_s,
        "services": services(settings, ports),
    }
    for stale in (where / supervisor.SERVICES).glob("*.json"):
        stale.unlink()
    spec_path = where / SPEC_FILE
    _write_owner_only(spec_path, json.dumps(spec, indent=1))  # it holds the database URLs and their password
    log_path = where / SUPERVISOR_LOG
    child, offset = service.start_detached(
        [sys.executable, "-m", "infra.platform.supervisor", str(spec_path)], log_path, cwd=REPO_ROOT
    )
    while True:
        state = service.read_state(where / supervisor.SUPERVISOR_FILE)
        if state is not None and state.get("pid") == child.pid and state.get("up"):
            return True, ps(settings)
        if child.poll() is not None:
            raise PlatformError(_why_not_up(settings, log_path, offset))
        time.sleep(0.5)


def _refuse_servers_started_alone(settings: Settings) -> None:
    """The home's local server or online store started on their own (`railyard serve
    --background`, `online-store start`, a run) would be started a second time on the same data."""
    from infra.local_server import background
    from infra.online_store import valkey_process

    alone = {
        "the local serving process": ("railyard serve --stop", background.running(settings.local_serving_dir)),
        "the online store": ("railyard online-store stop", valkey_process.running(valkey_process.server_dir(settings))),
    }
    running = {name: stop for name, (stop, state) in alone.items() if state is not None}
    if running:
        error = Refused(f"already running outside the platform in this home: {', '.join(running)}; nothing was started")
        error.next_step = f"stop them (`{'`, `'.join(running.values())}`), then `railyard up` runs them supervised"
        raise error


def _write_owner_only(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.tmp")
    scratch.unlink(missing_ok=True)
    with os.fdopen(os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
        out.write(text)
    os.replace(scratch, path)


def _why_not_up(settings: Settings, log_path: Path, offset: int) -> str:
    """The failed service and the last lines of its log (else the supervisor's own)."""
    for path in sorted((folder(settings) / supervisor.SERVICES).glob("*.json")):
        state = service.read_state(path) or {}
        if state.get("status") == "failed":
            said = " | ".join(line.strip() for line in state.get("log_tail", []) if line.strip())
            return f"{state['name']} did not start ({state.get('why')}): {said[-800:]} (log: {state['log']})"
    said = " | ".join(service.log_lines(log_path, offset)[-5:])
    return f"the platform's supervisor exited: {said[-800:]} (log: {log_path})"


def _live_services(settings: Settings) -> list[tuple[str, dict]]:
    found = []
    for path in sorted((folder(settings) / supervisor.SERVICES).glob("*.json")):
        state = service.read_state(path) or {}
        if state.get("process") and process_alive(state["process"]):
            found.append((state["name"], state))
    return found


def down(settings: Settings) -> list[str]:
    """Stop the supervisor (it stops every service), then any service a killed supervisor left,
    each by its recorded pid; one line per thing stopped."""
    said = []
    grace = settings.platform_stop_grace_s
    if (state := supervisor_state(settings)) is not None:
        # It stops each service within the grace; a little more for itself.
        service.stop_process(
            state["pid"], lambda: bool(process_alive(state["process"])), grace * (len(PORT_NAMES) + 6) + 10
        )
        said.append(f"stopped the platform's supervisor ({describe(state['process'])}) and its services")
    for name, left in _live_services(settings):
        process = left["process"]
        service.stop_process(left["pid"], lambda p=process: bool(process_alive(p)), grace, group=True)
        service.kill_group(left["pid"])
        said.append(f"stopped {name} ({describe(process)}), left by a supervisor that was gone")
    for path in (folder(settings) / supervisor.SERVICES).glob("*.json"):
        path.unlink()
    return said


def ps(settings: Settings) -> list[dict]:
    """Each service the platform runs: name, pid, port, health, uptime, restarts, status, URL."""
    rows = []
    now = time.time()
    for path in sorted((folder(settings) / supervisor.SERVICES).glob("*.json"), key=_stage_order(settings)):
        state = service.read_state(path)
        if state is None:
            continue
        alive = bool(process_alive(state.get("process")))
        if state.get("once"):
            health = "done" if state.get("status") == "done" else ("running" if alive else state.get("status"))
        else:
            health = "healthy" if alive and supervisor.health(state, state.get("process")) else "unhealthy"
        rows.append(
            {
                "name": state["name"],
                "pid": state.get("pid") if alive else None,
                "port": state.get("port"),
                "health": health,
                "uptime_s": round(now - state["started"]) if alive else None,
                "restarts": state.get("restarts", 0),
                "status": state.get("status"),
                "url": state.get("url"),
            }
        )
    return rows


def _stage_order(settings: Settings):
    spec = service.read_state(folder(settings) / SPEC_FILE) or {"services": []}
    order = {entry["name"]: index for index, entry in enumerate(spec["services"])}
    return lambda path: order.get(path.stem, len(order))


def summary(rows: list[dict]) -> str:
    """One line for `railyard status`: the platform's health, and the services that restarted."""
    unhealthy = [row["name"] for row in rows if row["health"] not in ("healthy", "done")]
    restarted = [f"{row['name']} {row['restarts']}" for row in rows if row["restarts"]]
    return (
        f"platform: {len(rows)} services, {'unhealthy: ' + ', '.join(unhealthy) if unhealthy else 'all healthy'}; "
        f"restarts: {', '.join(restarted) or 'none'} (`railyard ps`)"
    )


def table(rows: list[dict]) -> list[str]:
    """`railyard ps` as text."""
    lines = [f"{'SERVICE':<13} {'PID':>7} {'PORT':>6} {'HEALTH':<10} {'UPTIME':>8} {'RESTARTS':>8}  URL"]
    for row in rows:
        uptime = "-" if row["uptime_s"] is None else _duration(row["uptime_s"])
        lines.append(
            f"{row['name']:<13} {row['pid'] or '-':>7} {row['port'] or '-':>6} {row['health']:<10} "
            f"{uptime:>8} {row['restarts']:>8}  {row['url'] or ''}"
        )
    return lines


def _duration(seconds: int) -> str:
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"
