"""The per-model release lock held in the model store, on both backends.

Holders are real subprocesses (killed for real with SIGKILL); S3 is moto's server over HTTP,
which the subprocesses reach through the RAILYARD_S3_ENDPOINT_URL the ``s3_bucket`` fixture
sets. Leases of 1 s keep the expiry tests short.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from model_registry import LockLostError, LockTimeoutError, open_store
from model_registry.s3 import S3Options
from model_registry.store import LOCK_NAME, parse_lock_record, parse_version_name
from tests.support import REPO_ROOT
from tests.support.stores import (
    FAST,
    MODEL,
    fail_requests,
    make_saved_model,
    metadata,
    stored_paths,
)

pytestmark = pytest.mark.timeout(120)

LEASE = 1.0  # seconds
POLL = 0.05

# A holder in its own process: takes the lock, says "locked", then either appends "start/end
# <pid>" lines to a log around a short sleep, or holds the lock until its stdin is closed.
HOLDER = """
import os, sys, time
from model_registry import open_store

uri, owner, lease_s, wait_s, log = sys.argv[1:]
store = open_store(uri, s3_endpoint_url=os.environ.get("RAILYARD_S3_ENDPOINT_URL"))
with store.release_lock("recmodel", owner=owner, lease_s=float(lease_s), wait_s=float(wait_s), poll_s=0.05):
    print("locked", flush=True)
    if not log:
        sys.stdin.read()  # until the test closes our stdin
    else:
        for step in ("start", "end"):
            with open(log, "a") as out:
                out.write(f"{step} {os.getpid()}\\n")
            time.sleep(0.05)
"""


def spawn(store, owner: str, *, lease_s: float = LEASE, wait_s: float = 0, log: Path | str = "") -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", HOLDER, store.uri, owner, str(lease_s), str(wait_s), str(log)],
        cwd=REPO_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def hold(store, owner: str, *, wait_s: float = 0) -> subprocess.Popen:
    """A subprocess that holds the lock until its stdin is closed."""
    holder = spawn(store, owner, wait_s=wait_s)
    assert holder.stdout.readline() == "locked\n"
    return holder


def take(store, owner: str = "the test", *, wait_s: float = 0, lease_s: float = LEASE):
    return store.release_lock(MODEL, owner=owner, lease_s=lease_s, wait_s=wait_s, poll_s=POLL)


def s3_store(bucket, options: S3Options = FAST):
    return open_store(bucket.uri("models"), s3_endpoint_url=bucket.endpoint_url, s3_options=options)


def lock_record(store) -> dict | None:
    return parse_lock_record(store._read_lock(MODEL))


# ---------------------------------------------------------------- both backends


def test_a_waiter_times_out_naming_the_holder_then_gets_the_lock_once_it_is_released(store, caplog):
    caplog.set_level(logging.INFO, logger="railyard.store")
    holder = hold(store, "retrain flow run 1234 (pid 99 on host x)")

    with pytest.raises(LockTimeoutError) as timeout:
        with take(store, wait_s=0.5):
            pytest.fail("took a lock another process holds")

    assert str(timeout.value).startswith(
        f"recmodel's release lock in {store.uri} is held by retrain flow run 1234 (pid 99 on host x) since 20"
    )
    assert caplog.text.count("waiting up to 0.5 s for recmodel's release lock, held by retrain flow run 1234") == 1
    threading.Timer(0.5, holder.stdin.close).start()  # the holder leaves its block while we wait
    with take(store, "approve", wait_s=10) as lease:
        assert holder.wait() == 0
        assert lease.owner == "approve"
        assert lock_record(store)["owner"] == "approve"
        lease.check()


def test_the_lock_is_released_when_the_block_raises_and_is_not_reentrant(store):
    with pytest.raises(RuntimeError, match="deploy failed"):
        with take(store):
            with pytest.raises(LockTimeoutError, match="held by the test since"):
                with take(store, "nested", wait_s=0.2):
                    pass
            raise RuntimeError("deploy failed")

    with take(store, "next"):
        assert lock_record(store)["owner"] == "next"


def test_holders_in_several_processes_never_overlap(store, tmp_path):
    log = tmp_path / "holders.log"
    holders = [spawn(store, f"holder {n}", lease_s=2, wait_s=30, log=log) for n in range(4)]

    assert [holder.wait() for holder in holders] == [0] * 4
    lines = log.read_text().splitlines()
    assert len(lines) == 8
    for start, end in zip(lines[::2], lines[1::2], strict=True):
        assert (start.split()[0], end.split()[0]) == ("start", "end") and start.split()[1] == end.split()[1]
    assert {line.split()[1] for line in lines} == {str(holder.pid) for holder in holders}


def test_the_lock_never_shows_up_as_a_version(store, tmp_path):
    assert parse_version_name(LOCK_NAME) is None
    with take(store):
        first = store.publish(MODEL, make_saved_model(tmp_path / "a", seed=1), metadata=metadata(1))
        assert LOCK_NAME in stored_paths(store)
        assert store.list_versions(MODEL) == [1] and store._scan(MODEL).taken == {1}

    second = store.publish(MODEL, make_saved_model(tmp_path / "b", seed=2), metadata=metadata(2))

    assert (first.version, second.version) == (1, 2)
    assert store.list_versions(MODEL) == [1, 2] and store.latest_version(MODEL) == 2


# ---------------------------------------------------------------- local folder


def test_local_a_killed_holder_frees_the_lock_at_once(tmp_path):
    store = open_store(str(tmp_path / "store"))
    holder = hold(store, "doomed")
    holder.kill()  # SIGKILL: no finally, no cleanup
    holder.wait()

    with take(store, wait_s=0):
        assert lock_record(store)["owner"] == "the test"


def test_local_the_lock_file_stays_and_names_no_past_holder(tmp_path):
    store = open_store(str(tmp_path / "store"))
    path = store.root / MODEL / LOCK_NAME

    with take(store):
        assert json.loads(path.read_bytes())["owner"] == "the test"

    assert path.is_file() and path.read_bytes() == b""  # never deleted: see LocalStore._try_lock
    assert lock_record(store) is None


# ---------------------------------------------------------------- S3 leases


def test_s3_a_killed_holder_frees_the_lock_when_its_lease_expires(s3_bucket):
    store = s3_store(s3_bucket)
    holder = hold(store, "doomed")
    holder.kill()
    holder.wait()
    dead = lock_record(store)

    with pytest.raises(LockTimeoutError, match="held by doomed since"):
        with take(store, wait_s=0):
            pass
    with take(store, wait_s=LEASE * 5) as lease:
        assert lease.acquired_at >= dead["expires_at"]  # taken over only once the lease had run out
        assert lock_record(store)["token"] != dead["token"]


def test_s3_a_live_holder_keeps_renewing_its_lease(s3_bucket):
    store = s3_store(s3_bucket)
    holder = hold(store, "long release")
    first = lock_record(store)

    deadline = time.monotonic() + 4 * LEASE
    while time.monotonic() < deadline:
        with pytest.raises(LockTimeoutError, match="held by long release"):
            with take(store, wait_s=0):
                pass
        time.sleep(0.2)

    assert lock_record(store)["expires_at"] > first["expires_at"] + 2 * LEASE
    holder.stdin.close()
    assert holder.wait() == 0
    assert lock_record(store) is None  # released: the lease object is gone


def test_s3_a_lease_taken_over_is_lost_and_left_to_the_new_holder(s3_bucket, caplog):
    store = s3_store(s3_bucket)
    key = f"models/{MODEL}/{LOCK_NAME}"
    intruder = {"owner": "intruder", "token": "t", "acquired_at": time.time(), "expires_at": time.time() + 60}

    with take(store) as lease:
        # What a taker does once it believes the lease expired: an unconditional overwrite here.
        store.client.put_object(Bucket=s3_bucket.name, Key=key, Body=json.dumps(intruder).encode())
        _wait_until_lost(lease)
        with pytest.raises(LockLostError, match="another holder took it over"):
            lease.check()

    assert lock_record(store) == intruder  # not deleted on leaving the block
    assert "lost recmodel's release lock, taken as the test" in caplog.text
    assert "was taken over from the test: leaving it" in caplog.text


def test_s3_a_lease_whose_renewals_fail_is_lost_once_it_expires(s3_bucket):
    store = s3_store(s3_bucket, S3Options(max_attempts=1, connect_timeout=1, read_timeout=2))

    with take(store) as lease:
        fail_requests(store, "PutObject", failures=1000, failure="server_error")  # every renewal fails
        holder = hold(store, "next holder", wait_s=LEASE * 5)  # takes it over once it expired
        with pytest.raises(LockLostError, match="was lost"):
            lease.check()
        _wait_until_lost(lease)

    assert lock_record(store)["owner"] == "next holder"  # not deleted on leaving the block
    holder.stdin.close()
    assert holder.wait() == 0


def _wait_until_lost(lease) -> None:
    deadline = time.monotonic() + 5 * LEASE
    while lease.lost is None and time.monotonic() < deadline:
        time.sleep(POLL)
