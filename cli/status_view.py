"""What `railyard status` says, as plain functions of what it read: per version its stage, who
moved it there, when and why (the transition log's last entry), a review's run and deadline; what
each serving label points at; the live figures of each version served."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from railyard.gray_rules import LiveFigures
from railyard.moments import when

WAITING_MODES = ("pause", "suspend")  # how a run waits for its review (release/state.release_owner)
# How the last stage change of a version reads.
MOVES = {
    "candidate": "registered",
    "staging": "smoke-tested",
    "production": "promoted",
    "archived": "archived",
    "rejected": "rejected",
}


def version_story(entry: Mapping) -> dict:
    """A version as `railyard status` shows it (its --json too), from ``StageRegistry.versions``:
    who moved it to its stage, when, why and from which run; ``rejected_by`` for a rejected one;
    ``review`` (since, flow run, deadline, how the run waits) while it awaits its review."""
    history = entry.get("history") or []
    last = history[-1] if history else {}
    story = {key: entry.get(key) for key in ("version", "kind", "stage", "metrics", "approved_by", "drift")}
    story |= {
        "since": last.get("time"),
        "moved_by": last.get("actor"),
        "reason": last.get("reason"),
        "flow_run_id": last.get("flow_run_id"),
        "rejected_by": last.get("actor") if entry.get("stage") == "rejected" else None,
        "review": None,
        "drift_override": entry.get("drift_override"),
        "warm_from": entry.get("warm_from"),
    }
    owner = entry.get("release_run") or {}
    if entry.get("stage") == "staging" and owner.get("mode") in WAITING_MODES:
        story["review"] = {
            "since": last.get("time"),
            "flow_run_id": owner.get("flow_run_id"),
            "deadline": owner.get("deadline"),
            "waits_by": owner["mode"],
        }
    return story


def distinct_labels(serving: Mapping[str, int | None]) -> dict[str, int]:
    """The labels that serve a version of their own: none that serves nothing, and no `canary`
    that names the `stable` version (after an approval both point at it)."""
    labels = {label: version for label, version in serving.items() if version is not None}
    if labels.get("canary") is not None and labels.get("canary") == labels.get("stable"):
        del labels["canary"]
    return labels


def _moment(iso: str | None) -> str:
    return "?" if not iso else when(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp())


def version_line(story: Mapping) -> str:
    auc = story["metrics"].get("auc") if story.get("metrics") else None
    head = f"v{story['version']:<4} {story['stage']:<11} {story['kind'] or '?':<12} " + (
        "auc -     " if auc is None else f"auc {auc:.4f}"
    )
    if (review := story.get("review")) is not None:
        deadline = "none" if review["deadline"] is None else when(review["deadline"])
        return (
            f"{head}  awaiting review since {_moment(review['since'])}, flow run {review['flow_run_id']}, "
            f"deadline {deadline}"
        )
    if story.get("moved_by") is None:
        return head + _notes(story)
    reason = f": {story['reason']}" if story.get("reason") else ""
    move = MOVES.get(story["stage"], story["stage"])
    return f"{head}  {move} by {story['moved_by']} at {_moment(story['since'])}{reason}{_notes(story)}"


def _notes(story: Mapping) -> str:
    """A version warm-started from another; trained on data that drifted: warned, or a block
    overridden (and why)."""
    warm = f"; warm-started from v{story['warm_from']}" if story.get("warm_from") else ""
    if story.get("drift_override"):
        return f"{warm}; data drift block overridden: {story['drift_override']}"
    return warm + ("; data drift warned" if story.get("drift") == "warn" else "")


def drift_run_line(run: Mapping | None) -> str | None:
    """The newest retrain run, when its drift check blocked it (it stopped before training) or warned."""
    tags = (run or {}).get("tags", {})
    level = tags.get("railyard.drift")
    if level not in ("block", "warn"):
        return None
    if level == "block" and not tags.get("railyard.drift_override"):
        what = "stopped before training by data drift"
    elif level == "block":
        what = f"data drift block overridden ({tags['railyard.drift_override']})"
    else:
        what = "data drift warned"
    return f"last run {run['name']} ({run['run_id']}): {what}: {tags.get('railyard.drift_summary', '')}"


def serving_line(serving: Mapping[str, int | None], down: str | None) -> str:
    if down is not None:
        return f"serving: {down}"
    labels = distinct_labels(serving)
    if not labels:
        return "serving: nothing served yet"
    line = "serving: " + ", ".join(f"{label} -> {version}" for label, version in labels.items())
    return line if "stable" in labels else f"{line} (nothing on stable yet: no version has reached production)"


def status_lines(
    stories: Sequence[Mapping],
    serving: Mapping[str, int | None],
    down: str | None,
    live: Sequence[LiveFigures],
    repaired: Sequence[str] = (),
    last_run: Mapping | None = None,
) -> list[str]:
    """The lines of `railyard status` before the online store's: repairs, versions, the newest
    run when data drift blocked it or warned, serving, live."""
    lines = [f"repaired: {line}" for line in repaired]
    lines += [version_line(story) for story in stories]
    lines += [line for line in (drift_run_line(last_run),) if line]
    lines.append(serving_line(serving, down))
    return lines + [f"live: {figures.summary()}" for figures in live]


def scorer_line(state: Mapping) -> str:
    """The streaming scorer's requests stream: its length, each group's pending and lag (requests
    not yet delivered), the dead letters and results (``infra.streaming.scorer.stream_state``)."""
    groups = ", ".join(
        f"{name}: {figures['pending']:,} pending, "
        + ("lag unknown" if figures["lag"] is None else f"lag {figures['lag']:,}")
        for name, figures in state["groups"].items()
    )
    return (
        f"streaming scorer: {state['length']:,} requests ({groups or 'no scorer has read them yet'}), "
        f"{state['dead_letters']:,} dead letters, {state['results']:,} results"
    )
