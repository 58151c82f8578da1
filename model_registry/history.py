"""The append-only transition log: every stage change of every version, one JSON record each,
kept in the model store beside the manifests and chained by hashes.

Each record carries the sha256 of the record before it, so an edited, removed or reordered
record breaks the chain where it happened. Eligibility decisions (may this version be promoted,
may we roll back to it?) are made from the log; MLflow's tags mirror it for the UI, and a
disagreement between the two is reported, never trusted. Pure functions: the store keeps the
bytes (``ModelStore.append_transition`` / ``transitions``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

from railyard.errors import Refused

GENESIS = "0" * 64  # the "previous hash" of the first record


class HistoryTampered(Refused):
    """The transition log does not verify: a record was edited, removed or reordered."""

    next_step = (
        "nothing changed; restore the model store's transition log from a backup, or find who edited it "
        "(`railyard status --verify-history` names the record)"
    )


class HistoryMismatch(Refused):
    """MLflow's stage tags disagree with the transition log."""

    next_step = (
        "nothing changed; the transition log is the record: someone edited MLflow's tags "
        "(`railyard status --verify-history` lists every disagreement)"
    )


def record_bytes(previous: bytes | None, sequence: int, entry: dict) -> bytes:
    """The next record: the entry with its sequence number and the hash of the record before it."""
    prev = GENESIS if previous is None else hashlib.sha256(previous).hexdigest()
    return json.dumps({"seq": sequence, **entry, "prev": prev}, sort_keys=True).encode()


def record_hash(record: dict) -> str:
    """The sha256 of a record as written (``record_bytes`` writes sorted-key JSON)."""
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def verify(raw_records: Sequence[bytes], where: str) -> list[dict]:
    """The records, once the chain verifies; HistoryTampered naming the first broken record."""
    records, previous = [], None
    for index, raw in enumerate(raw_records):
        try:
            record = json.loads(raw)
        except ValueError:
            raise HistoryTampered(f"{where}: record {index} is not JSON") from None
        expected = GENESIS if previous is None else hashlib.sha256(previous).hexdigest()
        if record.get("seq") != index:
            raise HistoryTampered(
                f"{where}: record {index} says it is record {record.get('seq')} (removed or reordered)"
            )
        if record.get("prev") != expected:
            raise HistoryTampered(f"{where}: record {index} does not follow record {index - 1} (edited or replaced)")
        records.append(record)
        previous = raw
    return records


def versions_history(records: Sequence[dict]) -> dict[int, list[dict]]:
    """Each version's entries, in order."""
    history: dict[int, list[dict]] = {}
    for record in records:
        history.setdefault(int(record["version"]), []).append(record)
    return history


def disagreements(history: dict[int, list[dict]], mlflow_stages: dict[int, str]) -> list[str]:
    """Where MLflow's stage of a version is not the log's (versions the log never saw are not compared)."""
    found = []
    for version, entries in sorted(history.items()):
        logged = entries[-1]["stage"]
        if mlflow_stages.get(version) != logged:
            found.append(f"version {version}: the log says {logged}, MLflow says {mlflow_stages.get(version)}")
    return found
