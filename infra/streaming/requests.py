"""Score requests and results as the streams carry them: pure functions, no server.

A request entry (``railyard:scores:requests``) has the fields

    id          the caller's request id: 1-128 characters of A-Z a-z 0-9 . _ : -
    userId      one id (the rating events' id rule)
    movieIds    one or more ids, comma-separated (at most the scorer's ``max_movies``)
    deadline_ms optional: Unix time in milliseconds after which a score is no use to the caller

Other fields are ignored. A request that breaks a rule is refused with a reason (``Refusal``):
``missing_field``, ``not_utf8``, ``bad_request_id``, ``id_not_integer``, ``id_out_of_range``,
``too_many_movies``, ``bad_deadline``.

A result entry (``railyard:scores:results``) has ``id``, ``entry`` (the request's entry id),
``status`` (``ok`` or ``deadline_exceeded``), ``userId``, ``movieIds``, and for ``ok``: ``scores``
(comma-separated, in ``movieIds`` order), ``version`` (the version TF Serving answered with),
``label``, ``degraded`` (1: ids-only scores, the online store did not answer); and
``latency_ms`` (the request entry's time to the result's).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from infra.online_store.consumer import Refusal
from railyard.errors import Refused
from railyard.events import MalformedEvent, parse_id

REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
ID_CHARS = 20  # an id of more characters (with its comma) is out of range anyway: bound the text first
MAX_DEADLINE_DIGITS = 15  # milliseconds: until the year 33658
OK, DEADLINE_EXCEEDED = "ok", "deadline_exceeded"
# A result's fields in order (``result_fields``): a ``deadline_exceeded`` result has the first six.
RESULT_FIELDS = ("id", "entry", "status", "userId", "movieIds", "latency_ms", "scores", "version", "label", "degraded")


@dataclass(frozen=True)
class ScoreRequest:
    request_id: str
    user_id: int
    movie_ids: tuple[int, ...]
    deadline_ms: int | None  # None: no deadline

    def expired(self, now_ms: int) -> bool:
        return self.deadline_ms is not None and now_ms > self.deadline_ms


@dataclass(frozen=True)
class Scores:
    """How a request was scored."""

    scores: Sequence[float]  # in the request's movieIds order
    label: str
    version: int | None
    degraded: bool


def parse_request(fields: Mapping[bytes | str, bytes | str], max_movies: int) -> ScoreRequest:
    """The request in a stream entry's fields, or ``Refusal`` naming the rule it breaks."""
    text = {}
    for name in ("id", "userId", "movieIds", "deadline_ms"):
        raw = fields.get(name.encode(), fields.get(name))
        if raw is None:
            continue
        try:
            text[name] = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
        except UnicodeDecodeError:
            raise Refusal("not_utf8", f"{name} is not UTF-8 text") from None
    missing = [name for name in ("id", "userId", "movieIds") if not text.get(name, "").strip()]
    if missing:
        raise Refusal("missing_field", f"no {', '.join(missing)} (a request has id, userId, movieIds)")
    request_id = text["id"]
    if not REQUEST_ID.fullmatch(request_id):
        raise Refusal("bad_request_id", f"id {request_id[:40]!r} must be 1-128 of A-Z a-z 0-9 . _ : -")
    movies = text["movieIds"]
    if len(movies) > max_movies * (ID_CHARS + 1):
        raise Refusal("too_many_movies", f"movieIds has {len(movies):,} characters: at most {max_movies} ids")
    movie_texts = [part.strip() for part in movies.split(",")]
    if len(movie_texts) > max_movies:
        raise Refusal("too_many_movies", f"{len(movie_texts):,} movieIds: at most {max_movies} per request")
    try:
        user_id = parse_id("userId", text["userId"].strip())
        movie_ids = tuple(parse_id("movieId", part) for part in movie_texts)
    except MalformedEvent as bad:
        raise Refusal(bad.reason, bad.detail) from None
    return ScoreRequest(request_id, user_id, movie_ids, _deadline(text.get("deadline_ms")))


def _deadline(text: str | None) -> int | None:
    if text is None or not text.strip():
        return None
    text = text.strip()
    if not text.isdigit() or len(text) > MAX_DEADLINE_DIGITS:
        raise Refusal("bad_deadline", f"deadline_ms {text[:40]!r} must be Unix time in milliseconds")
    return int(text)


def request_fields(request: ScoreRequest) -> dict[str, str]:
    """A request as a stream entry's fields."""
    fields = {"id": request.request_id, "userId": str(request.user_id), "movieIds": _ids(request.movie_ids)}
    if request.deadline_ms is not None:
        fields["deadline_ms"] = str(request.deadline_ms)
    return fields


def result_fields(request: ScoreRequest, entry_id: bytes, scored: Scores | None, latency_ms: float) -> dict[str, str]:
    """A request's result as a stream entry's fields; ``scored`` None: its deadline passed."""
    fields = {
        "id": request.request_id,
        "entry": entry_id.decode(),
        "status": OK if scored is not None else DEADLINE_EXCEEDED,
        "userId": str(request.user_id),
        "movieIds": _ids(request.movie_ids),
        "latency_ms": f"{latency_ms:.3f}",
    }
    if scored is not None:
        fields |= {
            "scores": ",".join(repr(float(score)) for score in scored.scores),
            "version": "" if scored.version is None else str(scored.version),
            "label": scored.label,
            "degraded": "1" if scored.degraded else "0",
        }
    return fields


def read_result(fields: Mapping[bytes, bytes]) -> dict:
    """A result entry as plain values (what ``railyard results`` prints)."""
    text = {key.decode(): value.decode() for key, value in fields.items()}
    result = {
        "id": text["id"],
        "entry": text["entry"],
        "status": text["status"],
        "userId": int(text["userId"]),
        "movieIds": [int(part) for part in text["movieIds"].split(",")],
        "latency_ms": float(text["latency_ms"]),
    }
    if text["status"] == OK:
        result |= {
            "scores": [float(part) for part in text["scores"].split(",")],
            "version": int(text["version"]) if text["version"] else None,
            "label": text["label"],
            "degraded": text["degraded"] == "1",
        }
    return result


class RequestFileError(Refused):
    """A requests file Railyard cannot publish; nothing was published."""

    next_step = "fix the file (JSON lines: id, userId, movieIds, optional deadline_ms) and publish again"


def read_request_file(path: Path, max_movies: int, timeout_ms: int | None, now_ms: int) -> list[ScoreRequest]:
    """The requests of a JSON-lines file (one object per line: ``id``, ``userId``, ``movieIds``
    as a list, optional ``deadline_ms``; ``timeout_ms`` gives a deadline to those without one),
    refused whole when a line breaks a rule."""
    requests = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise RequestFileError(f"{path} cannot be read: {error}") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or not isinstance(row.get("movieIds"), list):
                raise Refusal("bad_line", "a line must be an object with movieIds as a list")
            fields = {name: str(value) for name, value in row.items() if name != "movieIds" and value is not None}
            fields["movieIds"] = ",".join(str(movie) for movie in row["movieIds"])
            if "deadline_ms" not in fields and timeout_ms is not None:
                fields["deadline_ms"] = str(now_ms + timeout_ms)
            requests.append(parse_request(fields, max_movies))
        except json.JSONDecodeError as error:
            raise RequestFileError(f"{path}: line {number} is not JSON ({error.msg}); nothing was published") from None
        except Refusal as bad:
            raise RequestFileError(f"{path}: line {number}: {bad.reason}: {bad}; nothing was published") from None
    return requests


def _ids(ids: Sequence[int]) -> str:
    return ",".join(str(number) for number in ids)
