"""`railyard up` / `ps` / `down` on a fresh home, real processes all the way: the embedded
PostgreSQL from its wheel under Prefect's server (UI included, behind the authenticating proxy)
and MLflow's, the deployments, a worker, the local serving process, the online store, the
ingester and the ranking service. One platform for the whole module (it is the slow part): up,
up again, a run started as the UI would, refused when answered straight to Prefect's API,
approved through the proxy as alice, a kill -9 of PostgreSQL while it waits restarted and
counted, down leaving no process (checked by pid)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import psycopg2
import pytest

from infra.platform import postgres
from railyard.processes import descendants, identity, process_alive
from railyard.synthetic import generate_movielens
from tests.support import REPO_ROOT
from tests.support.browser import screenshot, wait_for_text
from tests.support.proxy import call as proxy_call
from tests.support.proxy import credential

pytestmark = pytest.mark.slow
ALICE_PASSWORD = "alice-long-passphrase"
ALICE = credential("alice", ALICE_PASSWORD)
SERVICES = [
    "postgres",
    "databases",
    "serving",
    "online-store",
    "prefect",
    "proxy",
    "mlflow",
    "deployments",
    "worker",
    "ingester",
    "ranker",
    "scorer",
]


@pytest.fixture(scope="module")
def platform():
    # Not under pytest's temporary folder: another pytest session on the machine makes its root
    # owner-only again, and PostgreSQL runs as another user when this is root (it must reach its data).
    scratch = Path(tempfile.mkdtemp(prefix="railyard-up-"))
    home = scratch / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAILYARD_", "PREFECT_API_URL"))}
    env |= {
        "RAILYARD_HOME": str(home),
        "RAILYARD_PLATFORM_USUAL_PORTS": "false",
        "RAILYARD_PLATFORM_RESTART_BASE_S": "0.5",
        # The run started from the UI below trains on a small draw: its release is the point, not
        # its model (as tests/support/release_world.py: no gate on progress or absolute bounds).
        "RAILYARD_MAX_SKEW_SHARE": "1",
        "RAILYARD_SMOKE_REQUESTS": "40",
        "RAILYARD_SMOKE_P95_MS": "2000",
        "RAILYARD_MIN_AUC": "0",
        "RAILYARD_MIN_AUC_LIFT": "-1",
        "RAILYARD_MAX_LOGLOSS": "10",
        "RAILYARD_DRIFT_BLOCK": "false",
        "PREFECT_WORKER_QUERY_SECONDS": "2",  # the worker picks up a resumed run sooner (default 10)
    }

    def railyard(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "cli", *args],
            env=env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=600,
            input=stdin,
        )

    added = railyard("users", "add", "alice", stdin=ALICE_PASSWORD + "\n")
    assert added.returncode == 0, added.stderr
    started = railyard("up", "--json")
    try:
        assert started.returncode == 0, started.stderr
        yield home, railyard, {row["name"]: row for row in json.loads(started.stdout)}
    finally:
        railyard("down")
        shutil.rmtree(scratch, ignore_errors=True)


def get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return answer.status, answer.read()


def status(url: str) -> int | None:
    try:
        return get(url)[0]
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None


REVIEW_KEYS = {"schema": "review-schema", "response": "review-response", "description": "review-description"}
REVIEW_SCHEMA = {
    "type": "object",
    "properties": {"approve": {"type": "boolean"}, "reviewer": {"type": "string"}},
    "required": ["approve", "reviewer"],
}


def call(method: str, url: str, body=None):
    request = urllib.request.Request(
        url,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=120) as answer:
        return json.loads(answer.read() or b"null")


def setup_call(method: str, url: str, body=None):
    """A call of the test's set-up, one at a time: retried while a locked SQLite answers 503."""
    for _ in range(20):
        try:
            return call(method, url, body)
        except urllib.error.HTTPError as error:
            if error.code != 503:
                raise
        time.sleep(0.5)
    return call(method, url, body)


def concurrent_resumes_and_creations(api: str, count: int = 50) -> dict[str, list]:
    """``count`` review answers (resumes of suspended runs, with their input) and ``count`` new flow
    runs, all sent at once; what was lost: failed calls, runs not resumed, answers not stored,
    runs not created."""
    from concurrent.futures import ThreadPoolExecutor

    flow = setup_call("POST", f"{api}/flows/", {"name": "lost-writes"})["id"]
    # A suspended run is a deployment's (Prefect reschedules it from there when it is resumed).
    deployment = setup_call("POST", f"{api}/deployments/", {"name": "lost-writes", "flow_id": flow})["id"]
    suspended = {
        "type": "PAUSED",
        "name": "Suspended",
        "state_details": {"pause_reschedule": True, "pause_key": "review", "run_input_keyset": REVIEW_KEYS},
    }
    waiting = []
    for index in range(count):
        run = setup_call(
            "POST",
            f"{api}/flow_runs/",
            {"flow_id": flow, "deployment_id": deployment, "name": f"review-{index}", "state": suspended},
        )
        setup_call(
            "POST",
            f"{api}/flow_runs/{run['id']}/input",
            {"key": REVIEW_KEYS["schema"], "value": json.dumps(REVIEW_SCHEMA)},
        )
        waiting.append(run["id"])

    def resume(index: int):
        answer = {"approve": True, "reviewer": f"reviewer-{index}"}
        return call("POST", f"{api}/flow_runs/{waiting[index]}/resume", {"run_input": answer})["status"]

    def create(index: int):
        return call("POST", f"{api}/flow_runs/", {"flow_id": flow, "name": f"created-{index}"})["id"]

    lost: dict[str, list] = {"calls": [], "not_resumed": [], "answers": [], "not_created": []}
    with ThreadPoolExecutor(max_workers=2 * count) as pool:
        futures = [("resume", i, pool.submit(resume, i)) for i in range(count)]
        futures += [("create", i, pool.submit(create, i)) for i in range(count)]
        for kind, index, future in futures:
            try:
                outcome = future.result()
            except OSError as error:  # an HTTP error included
                lost["calls"].append(f"{kind} {index}: {error}")
                continue
            if kind == "resume" and outcome != "ACCEPT":
                lost["calls"].append(f"resume {index}: {outcome}")
    for index, run_id in enumerate(waiting):
        if setup_call("GET", f"{api}/flow_runs/{run_id}")["state"]["type"] != "SCHEDULED":
            lost["not_resumed"].append(index)
        try:
            stored = setup_call("GET", f"{api}/flow_runs/{run_id}/input/{REVIEW_KEYS['response']}")
        except urllib.error.HTTPError:
            stored = None
        if stored != {"approve": True, "reviewer": f"reviewer-{index}"}:
            lost["answers"].append(index)
    names = {
        run["name"]
        for run in setup_call("POST", f"{api}/flow_runs/filter", {"flows": {"id": {"any_": [flow]}}, "limit": 200})
    }
    lost["not_created"] = [index for index in range(count) if f"created-{index}" not in names]
    return lost


def server(rows: dict) -> str:
    """Prefect's server itself (people open it through the proxy: rows["prefect"]["url"])."""
    return f"http://127.0.0.1:{rows['prefect']['port']}"


def test_fifty_concurrent_review_answers_and_run_creations_lose_nothing_on_postgresql(platform):
    _, _, rows = platform
    assert concurrent_resumes_and_creations(server(rows) + "/api") == {
        "calls": [],
        "not_resumed": [],
        "answers": [],
        "not_created": [],
    }


def test_the_same_against_prefects_sqlite_database_loses_writes(prefect_server):
    """Why PostgreSQL: the session's Prefect server on SQLite answers most of the same calls with
    503 ("database is locked" in its log): review answers and new runs that never happened."""
    lost = concurrent_resumes_and_creations(prefect_server)
    assert lost["calls"] and all("503" in call for call in lost["calls"])
    assert lost["not_resumed"] and lost["not_created"]


def test_the_uis_load_at_the_urls_up_printed_and_prefects_shows_the_deployments(platform, offline_browser):
    _, _, rows = platform
    proxy = rows["prefect"]["url"]
    assert proxy == rows["proxy"]["url"]
    signed_in = proxy.replace("http://", f"http://alice:{ALICE_PASSWORD}@")  # the browser keeps it for the origin
    offline_browser.get(signed_in + "/deployments")
    wait_for_text(offline_browser, "daily")  # the UI called this server's API through the proxy
    screenshot(offline_browser, "platform-prefect-deployments")
    offline_browser.get(rows["mlflow"]["url"] + "/")
    wait_for_text(offline_browser, "Default")  # the experiment every MLflow database starts with
    screenshot(offline_browser, "platform-mlflow")


def wait_for(what: str, check, timeout_s: float = 600):
    deadline = time.monotonic() + timeout_s
    while not (found := check()):
        assert time.monotonic() < deadline, f"waited {timeout_s:g} s for {what}"
        time.sleep(1)
    return found


def test_a_run_started_as_the_ui_would_is_approved_through_the_proxy_as_alice(platform):
    """The UI's path: alice starts `retrain/daily` through the proxy; it suspends for review.
    PostgreSQL is killed -9 while the run waits: restarted, nothing lost. Alice approves through
    the proxy, typing another name: the actor recorded is alice. (An answer sent straight to
    Prefect's API, bypassing the proxy, is refused: tests/integration/test_approval_form.py.)"""
    home, railyard, rows = platform
    proxy, direct = rows["prefect"]["url"] + "/api", server(rows) + "/api"
    data = home.parent / "data"
    generate_movielens(data, users=150, movies=200, days=6, ratings_per_day=800, seed=1)
    _, daily = proxy_call("GET", f"{proxy}/deployments/name/retrain/daily", auth=ALICE)
    created, run = proxy_call(
        "POST",
        f"{proxy}/deployments/{daily['id']}/create_flow_run",
        {"parameters": {"data_dir": str(data), "epochs": 1}},
        auth=ALICE,
    )
    assert created == 201, run
    run_id = run["id"]

    def state() -> dict:
        return call("GET", f"{direct}/flow_runs/{run_id}")["state"]

    def waits_under(key: str):
        now = state()
        assert now["type"] not in ("FAILED", "CRASHED", "COMPLETED", "CANCELLED"), now
        return now["type"] == "PAUSED" and now["state_details"].get("pause_key") == key

    wait_for("the run to suspend for its review", lambda: waits_under("approve-recmodel-v1"))
    versions = lambda: {v["version"]: v for v in json.loads(railyard("status", "--json").stdout)["versions"]}  # noqa: E731
    assert versions()[1]["stage"] == "staging"

    # kill -9 of PostgreSQL while the run waits: restarted, counted, shown; Prefect answers again.
    os.kill(rows["postgres"]["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 120
    while True:
        now = {row["name"]: row for row in json.loads(railyard("ps", "--json").stdout)}
        if now["postgres"]["restarts"] == 1 and now["postgres"]["health"] == "healthy":
            break
        assert time.monotonic() < deadline, now["postgres"]
        time.sleep(0.5)
    assert now["postgres"]["pid"] != rows["postgres"]["pid"]
    assert (
        f"postgres (pid {rows['postgres']['pid']}) exited with code -9"
        in (home / "platform" / "supervisor.log").read_text()
    )
    deadline = time.monotonic() + 60
    while status(f"{direct}/ready") != 200:  # it reconnects to the restarted database
        assert time.monotonic() < deadline
        time.sleep(0.5)
    shown = next(line.split() for line in railyard("ps").stdout.splitlines() if line.startswith("postgres "))
    assert shown[1:6] == [str(now["postgres"]["pid"]), str(now["postgres"]["port"]), "healthy", shown[4], "1"]
    assert waits_under("approve-recmodel-v1") and versions()[1]["stage"] == "staging"  # the run still waits

    # Alice, through the proxy, with another name typed in the form: the actor is alice.
    typed = {"decision": "approve", "reviewer": "Mallory", "comment": "looks right"}
    assert proxy_call("POST", f"{proxy}/flow_runs/{run_id}/resume", {"run_input": typed}, auth=ALICE)[0] == 201
    wait_for("the run to end", lambda: state()["type"] in ("COMPLETED", "FAILED", "CRASHED"))
    assert state()["message"] == "version 1 promoted to production by alice: looks right [named: Mallory]"
    checked = railyard("status", "--json", "--verify-history")  # the transition log's hash chain too
    assert checked.returncode == 0, checked.stderr
    promoted = {v["version"]: v for v in json.loads(checked.stdout)["versions"]}[1]
    assert (promoted["stage"], promoted["moved_by"], promoted["flow_run_id"]) == ("production", "alice", run_id)
    # Nothing lost across the kill: the run's answers and its log are in Prefect's database.
    inputs = call("POST", f"{direct}/flow_runs/{run_id}/input/filter", {"prefix": "suspended-", "limit": 20})
    assert "suspended-approve-recmodel-v1-response" in {item["key"] for item in inputs}
    logs = call("POST", f"{direct}/logs/filter", {"logs": {"flow_run_id": {"any_": [run_id]}}, "limit": 200})
    assert any("alice answered approve: looks right [named: Mallory]" in log["message"] for log in logs)


def test_up_runs_every_service_on_loopback_on_postgresql_then_down_leaves_no_process(platform):
    home, railyard, rows = platform
    assert list(rows) == SERVICES
    assert {name: row["health"] for name, row in rows.items()} == {
        name: "done" if name in ("databases", "deployments") else "healthy" for name in SERVICES
    }
    ports = [row["port"] for row in rows.values() if row["port"]]
    assert len(set(ports)) == len(ports) == 8  # and the serving gRPC port, in ports.json
    assert json.loads((home / "platform" / "ports.json").read_text())["prefect"] == rows["prefect"]["port"]

    # Prefect: opened through the proxy (alice's credential), its UI calls the API through it too;
    # the deployments are registered; its data is in PostgreSQL.
    prefect = rows["prefect"]["url"]
    assert prefect == f"http://127.0.0.1:{rows['proxy']['port']}"
    assert proxy_call("GET", f"{prefect}/ui-settings")[0] == 401
    assert proxy_call("GET", f"{prefect}/ui-settings", auth=ALICE)[1]["api_url"] == f"{prefect}/api"
    assert get(f"{server(rows)}/api/deployments/name/retrain/daily")[0] == 200
    assert get(rows["mlflow"]["url"] + "/health")[0] == 200
    assert b"railyard_scorer" in get(rows["scorer"]["url"])[1]  # the streaming scorer's metrics
    pg = home / "postgres"
    assert (pg / "password").stat().st_mode & 0o077 == 0
    for database, table in (("prefect", "flow_run"), ("mlflow", "experiments")):
        with psycopg2.connect(postgres.url(pg, rows["postgres"]["port"], database)) as connection:
            with connection.cursor() as cursor:
                cursor.execute("SELECT to_regclass(%s)", (table,))
                assert cursor.fetchone()[0] == table

    again = railyard("up")
    assert again.returncode == 0 and again.stdout.startswith("the platform was already up:"), again.stdout

    now = {row["name"]: row for row in json.loads(railyard("ps", "--json").stdout)}  # after the kill -9 above
    said = railyard("status")  # on the platform's MLflow (the home's tracking moved there)
    assert said.returncode == 0, said.stderr
    assert said.stdout.splitlines()[-1] == "platform: 12 services, all healthy; restarts: postgres 1 (`railyard ps`)"

    supervisor = json.loads((home / "platform" / "supervisor.json").read_text())
    everything = [identity(supervisor["pid"])] + descendants(supervisor["pid"])
    everything += [process for row in now.values() if row["pid"] for process in descendants(row["pid"])]
    stopped = railyard("down")
    assert stopped.returncode == 0, stopped.stderr
    assert [process for process in everything if process_alive(process)] == []
    assert railyard("ps").stdout.strip() == "the platform is not up (`railyard up`)"


def test_a_postgresql_that_does_not_start_is_reported_from_its_log_and_nothing_is_left():
    scratch = Path(tempfile.mkdtemp(prefix="railyard-up-"))
    home = scratch / "home"
    try:
        postgres.prepare(home / "postgres")
        with open(home / "postgres" / "data" / "postgresql.conf", "a") as conf:
            conf.write("shared_buffers = plenty\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAILYARD_", "PREFECT_API_URL"))}
        env |= {"RAILYARD_HOME": str(home), "RAILYARD_PLATFORM_USUAL_PORTS": "false"}
        done = subprocess.run(
            [sys.executable, "-m", "cli", "up"], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 1
        assert done.stderr.startswith("error: postgres did not start (exited with code 1): "), done.stderr
        assert 'invalid value for parameter "shared_buffers": "plenty"' in done.stderr
        assert json.loads(
            subprocess.run(
                [sys.executable, "-m", "cli", "ps", "--json"], env=env, cwd=REPO_ROOT, capture_output=True, text=True
            ).stdout
        ) == [
            {
                "name": "postgres",
                "pid": None,
                "port": ANY_PORT,
                "health": "unhealthy",
                "uptime_s": None,
                "restarts": 0,
                "status": "failed",
                "url": None,
            }
        ]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


class _AnyPort:
    def __eq__(self, other) -> bool:
        return isinstance(other, int) and 0 < other < 65536


ANY_PORT = _AnyPort()
