"""`railyard worker`'s supervision (railyard/processes.run_supervised) with real processes: a
service that, like Prefect's worker, kills its children when it stops, and two children, one
that ends its work on SIGTERM and one that ignores it."""

import json
import signal
import subprocess
import sys
import textwrap
import time

from railyard.processes import descendants, process_alive
from tests.support import REPO_ROOT

SERVICE = textwrap.dedent(
    """
    import signal, subprocess, sys, time
    from pathlib import Path

    out = Path(sys.argv[1])
    polite = "import signal, sys, time; from pathlib import Path\\n" \\
        "def done(*_): Path(sys.argv[1]).write_text('concluded'); sys.exit(0)\\n" \\
        "signal.signal(signal.SIGTERM, done)\\n" \\
        "while True: time.sleep(0.1)\\n"
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN)\\nwhile True: time.sleep(0.1)"
    children = [
        subprocess.Popen([sys.executable, "-c", polite, str(out / "polite")], start_new_session=True),
        subprocess.Popen([sys.executable, "-c", stubborn], start_new_session=True),
    ]

    def leave(*_):  # what Prefect's worker does to its flow runs when it stops
        for child in children:
            child.kill()
        sys.exit(0)

    signal.signal(signal.SIGTERM, leave)
    time.sleep(1)  # the children install their handlers
    (out / "ready").write_text("")
    while True:
        time.sleep(0.1)
    """
)


def test_one_sigterm_lets_each_child_end_its_work_then_kills_what_is_left(tmp_path):
    (tmp_path / "service.py").write_text(SERVICE)
    service = [sys.executable, str(tmp_path / "service.py"), str(tmp_path)]
    supervisor = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import sys; from railyard.processes import run_supervised; "
            f"sys.exit(run_supervised({json.dumps(service)}, grace_s=2))",
        ],
        cwd=REPO_ROOT,
    )
    tree: list[dict] = []
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "ready").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        tree = descendants(supervisor.pid)
        assert len(tree) == 3, tree  # the service and its two children

        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=30) == 128 + signal.SIGTERM
        assert [process for process in tree if process_alive(process)] == []
        assert (tmp_path / "polite").read_text() == "concluded"  # before the service could kill it
    finally:
        for process in tree:
            if process_alive(process):
                subprocess.run(["kill", "-9", str(process["pid"])], check=False)
        if supervisor.poll() is None:
            supervisor.kill()
