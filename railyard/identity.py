"""Who decided: the users the proxy in front of Prefect authenticates, and the signed record of who
answered a review.

- Users (``railyard users add|remove|list``): ``$RAILYARD_HOME/auth/users.json``, owner-only,
  each password hashed with scrypt and a salt of its own; the file never holds a password.
- The actor record: before a review's answer reaches Prefect (through the proxy, or from the
  CLI as the OS user), the sender writes a record ``{actor, via, answer_sha256, signature}`` as
  a run input of that flow run. The signature is an HMAC with the home's owner-only key over the
  flow run id, the actor and the answer's hash, so a record proves who sent *this* answer to
  *this* run; the release takes its actor from it (docs/release.md).
- The same record for a run started from a deployment (the UI's Run button, through the proxy):
  what it signs is the deployment and the parameters the run was created with
  (``started_run``), so a promote or rollback run knows who asked for it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
from pathlib import Path

from railyard.errors import Refused
from railyard.fsutil import atomic_write_text

USERS_FILE = "auth/users.json"
KEY_FILE = "auth/record.key"
# A run input key starts with this, then the answer's hash (prefix) and a random tail: two
# records for the same answer never collide, and the run finds its answer's records by prefix.
RECORD_PREFIX = "railyard-actor"
MIN_PASSWORD_LENGTH = 10
USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
# scrypt's cost: 16 MB and ~0.1-0.2 s per check on these machines (measured under load); the
# proxy checks a credential once, then remembers it (``infra.platform.proxy.Users``).
_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}
ANSWER_FIELDS = ("decision", "reviewer", "comment")
STARTED = "started"  # the one field of what a run's start record signs


class UnknownUser(Refused):
    next_step = "`railyard users list` shows who exists"


# -- users --------------------------------------------------------------------------------------


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else secrets.token_bytes(16)
    derived = hashlib.scrypt(password.encode(), salt=salt, **_SCRYPT)
    return f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${_b64(salt)}${_b64(derived)}"


def password_matches(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, expected = stored.split("$")
        if scheme != "scrypt":
            return False
        derived = hashlib.scrypt(
            password.encode(), salt=_unb64(salt), n=int(n), r=int(r), p=int(p), dklen=len(_unb64(expected))
        )
    except ValueError:
        return False
    return hmac.compare_digest(derived, _unb64(expected))


def check_new_password(password: str) -> None:
    if not password.strip():
        raise Refused("the password is empty: nothing was changed")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise Refused(f"the password is too short (at least {MIN_PASSWORD_LENGTH} characters): nothing was changed")


def read_users(home: Path) -> dict[str, str]:
    """Each user's stored hash (none when the file does not exist)."""
    try:
        return json.loads((Path(home) / USERS_FILE).read_text())
    except FileNotFoundError:
        return {}


def add_user(home: Path, name: str, password: str) -> None:
    if not USER_NAME.fullmatch(name):
        raise Refused(
            f"invalid user name {name!r}: letters, digits, '_', '.', '@', '-' (at most 64): nothing was changed"
        )
    users = read_users(home)
    if name in users:
        raise Refused(f"user {name} already exists: nothing was changed (`railyard users remove {name}` first)")
    check_new_password(password)
    _write_users(home, users | {name: hash_password(password)})


def remove_user(home: Path, name: str) -> None:
    users = read_users(home)
    if name not in users:
        raise UnknownUser(f"there is no user {name}: nothing was changed")
    del users[name]
    _write_users(home, users)


def _write_users(home: Path, users: dict[str, str]) -> None:
    path = Path(home) / USERS_FILE
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic_write_text(path, json.dumps(users, indent=1, sort_keys=True))  # owner-only (mkstemp)


def basic_user(header: str | None, users: dict[str, str]) -> str | None:
    """The user an HTTP Basic ``Authorization`` header proves, or None."""
    if not header or not header.startswith("Basic "):
        return None
    try:
        name, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    stored = users.get(name)
    return name if stored is not None and password_matches(password, stored) else None


# -- the signed record of who answered ---------------------------------------------------------


def record_key(home: Path) -> bytes:
    """The home's signing key, made on first use (owner-only: only the home's owner can sign)."""
    path = Path(home) / KEY_FILE
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
                out.write(secrets.token_hex(32))
        except FileExistsError:
            pass  # another process made it meanwhile
        return bytes.fromhex(path.read_text().strip())


def started_run(deployment_id: str, parameters: dict) -> dict:
    """What the record of a deployment run's start signs: its deployment and its parameters as
    Prefect stored them (the proxy reads them from the created run, the run from the API)."""
    return {STARTED: json.dumps({"deployment_id": str(deployment_id), "parameters": parameters}, sort_keys=True)}


def answer_sha256(answer: dict) -> str:
    """The hash of a review answer's fields (or of a run's start, ``started_run``), as the server
    stores them and the run reads them."""
    fields = {
        name: str(answer.get(name) or "").strip() for name in ((STARTED,) if STARTED in answer else ANSWER_FIELDS)
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def _signature(key: bytes, flow_run_id: str, actor: str, via: str, digest: str) -> str:
    message = json.dumps([str(flow_run_id).lower(), actor, via, digest]).encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def signed_record(key: bytes, flow_run_id: str, actor: str, via: str, answer: dict) -> tuple[str, str]:
    """The run input (key, JSON value) that says ``actor`` sent ``answer`` to this run (``via``:
    proxy, cli, railyard)."""
    digest = answer_sha256(answer)
    record = {"actor": actor, "via": via, "answer_sha256": digest}
    record["signature"] = _signature(key, flow_run_id, actor, via, digest)
    return f"{RECORD_PREFIX}-{digest[:16]}-{secrets.token_hex(4)}", json.dumps(record)


def record_prefix(answer: dict) -> str:
    return f"{RECORD_PREFIX}-{answer_sha256(answer)[:16]}"


def verified_actor(key: bytes, flow_run_id: str, answer: dict, records: list[str]) -> str | None:
    """The actor of the first record (JSON values) that is signed for this run and this answer."""
    digest = answer_sha256(answer)
    for value in records:
        try:
            record = json.loads(value)
            actor, via, signature = record["actor"], record["via"], record["signature"]
        except (ValueError, TypeError, KeyError):
            continue
        if record.get("answer_sha256") == digest and hmac.compare_digest(
            str(signature), _signature(key, flow_run_id, str(actor), str(via), digest)
        ):
            return str(actor)
    return None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)
