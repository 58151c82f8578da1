"""Users and the signed record of who answered a review (railyard/identity.py): pure logic and
the owner-only files under a home."""

import base64
import json
import stat

import pytest

from railyard import identity
from railyard.errors import Refused

ANSWER = {"decision": "approve", "reviewer": "Mallory", "comment": "fine"}
RUN = "0b6a3f55-3a4c-4d21-9d51-4a0f2c8e0f11"


def basic(name: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{name}:{password}".encode()).decode()


def test_a_user_is_stored_hashed_with_a_salt_of_its_own_in_an_owner_only_file(tmp_path):
    identity.add_user(tmp_path, "alice", "correct horse battery")
    identity.add_user(tmp_path, "bob", "correct horse battery")
    path = tmp_path / identity.USERS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "correct horse" not in path.read_text()
    users = identity.read_users(tmp_path)
    assert users["alice"].startswith("scrypt$") and users["alice"] != users["bob"]  # salted
    assert identity.basic_user(basic("alice", "correct horse battery"), users) == "alice"
    for header in (basic("alice", "wrong password!"), basic("carol", "correct horse battery"), "Basic !!", None):
        assert identity.basic_user(header, users) is None


@pytest.mark.parametrize(
    ("name", "password", "said"),
    [
        ("alice", "another long one", "user alice already exists"),
        ("bob", "", "the password is empty"),
        ("bob", "   ", "the password is empty"),
        ("bob", "short", "the password is too short"),
        ("bob/..", "long enough pass", "invalid user name"),
    ],
)
def test_refusals_say_why_and_change_nothing(tmp_path, name, password, said):
    identity.add_user(tmp_path, "alice", "correct horse battery")
    before = (tmp_path / identity.USERS_FILE).read_text()
    with pytest.raises(Refused, match=said):
        identity.add_user(tmp_path, name, password)
    assert (tmp_path / identity.USERS_FILE).read_text() == before


def test_removing_an_unknown_user_is_refused_and_a_removed_user_is_gone(tmp_path):
    identity.add_user(tmp_path, "alice", "correct horse battery")
    with pytest.raises(identity.UnknownUser, match="there is no user bob"):
        identity.remove_user(tmp_path, "bob")
    identity.remove_user(tmp_path, "alice")
    assert identity.read_users(tmp_path) == {}


def test_a_record_proves_its_actor_only_for_its_run_and_its_answer(tmp_path):
    key = identity.record_key(tmp_path)
    assert stat.S_IMODE((tmp_path / identity.KEY_FILE).stat().st_mode) == 0o600
    assert identity.record_key(tmp_path) == key  # made once
    name, value = identity.signed_record(key, RUN, "alice", "proxy", ANSWER)
    assert name.startswith(identity.record_prefix(ANSWER))
    assert identity.verified_actor(key, RUN, ANSWER, [value]) == "alice"
    # Blanks the form trims do not matter; the answer's fields do.
    assert identity.verified_actor(key, RUN, ANSWER | {"comment": " fine "}, [value]) == "alice"
    assert identity.verified_actor(key, RUN, ANSWER | {"decision": "reject"}, [value]) is None
    assert identity.verified_actor(key, "another-run", ANSWER, [value]) is None
    assert identity.verified_actor(b"another key", RUN, ANSWER, [value]) is None
    forged = json.loads(value) | {"actor": "mallory"}
    assert identity.verified_actor(key, RUN, ANSWER, [json.dumps(forged), "not json", "{}"]) is None
    assert identity.verified_actor(key, RUN, ANSWER, [json.dumps(forged), value]) == "alice"


def test_a_typed_name_is_kept_beside_the_comment_of_the_authenticated_actor():
    from release.decision import with_name

    assert with_name("looks right", "Mallory", "alice") == "looks right [named: Mallory]"
    assert with_name("looks right", " alice ", "alice") == "looks right"
    assert with_name("", "Mallory", "alice") == "[named: Mallory]"
    assert with_name("fine", None, "alice") == "fine"
