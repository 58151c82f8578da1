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
from itertools import takewhile

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


# The fields of a record that MLflow's history tags mirror: who, when, why, from which run.
ENTRY_FIELDS = ("stage", "from", "actor", "time", "reason", "flow_run_id")


def as_entry(record: dict) -> dict:
    """A log record as MLflow's history mirrors it (without the chain's own fields)."""
    return {field: record.get(field) for field in ENTRY_FIELDS}


def mirrored_history(mirrored: Sequence[dict], logged: Sequence[dict] | None) -> list[dict]:
    """A version's history as MLflow must show it: the log's entries, after the MLflow entries
    older than the log (a version registered before the log existed); MLflow's alone without
    log entries."""
    if not logged:
        return list(mirrored)
    entries = [as_entry(record) for record in logged]
    if entries[0]["from"] is None:  # the log holds the version's whole history
        return entries
    start = entries[0]["time"]
    return list(takewhile(lambda entry: str(entry.get("time")) < start, mirrored)) + entries


def entry_disagreements(version: int, mirrored: Sequence[dict], expected: Sequence[dict]) -> list[tuple[str, str]]:
    """Where MLflow's history of a version differs from ``expected``, field by field: for each,
    what a verification reports and what a repair says."""
    found = []
    for index in range(max(len(mirrored), len(expected))):
        if index >= len(mirrored):
            want = expected[index]
            text = f"version {version}: MLflow %s transition {index} ({want['stage']} by {want['actor']})"
            found.append((text % "lacks", text % "lacked"))
        elif index >= len(expected):
            have = mirrored[index]
            text = f"version {version}: MLflow %s transition {index} ({have.get('stage')} by {have.get('actor')}), which the log does not"
            found.append((text % "has", text % "had"))
        else:
            for field in ENTRY_FIELDS:
                have, want = mirrored[index].get(field), expected[index][field]
                if have != want:
                    text = f"version {version}, transition {index}: MLflow %s {field} {have!r}, the log says {want!r}"
                    found.append((text % "says", text % "said"))
    return found
