"""The ranking service's replica pool: round robin over healthy replicas, a replica that does
not answer set aside for a while, other refusals raised at once."""

import time

import pytest

from infra.tfserving.client import ServingError, ServingUnavailableError
from infra.tfserving.replicas import ReplicaPool


class Replica:
    def __init__(self, name: str) -> None:
        self.grpc_target, self.calls, self.failure = name, 0, None

    def label_version(self, model, label):
        self.calls += 1
        if self.failure is not None:
            raise self.failure
        return self.grpc_target


def down(name: str) -> ServingUnavailableError:
    return ServingUnavailableError(f"{name} is down", code="UNAVAILABLE")


def test_calls_take_turns_and_a_replica_down_is_skipped_until_its_cooldown_ends():
    a, b = Replica("a"), Replica("b")
    changes = []
    pool = ReplicaPool([a, b], cooldown_s=0.2, on_health=lambda replica, up: changes.append((replica, up)))
    assert [pool.label_version("m", "stable") for _ in range(4)] == ["a", "b", "a", "b"]

    b.failure = down("b")
    assert [pool.label_version("m", "stable") for _ in range(4)] == ["a"] * 4
    assert b.calls == 3  # two answers, then one failure: set aside, not asked again
    assert pool.down() == ["b"] and changes == [("b", False)]

    b.failure = None
    time.sleep(0.25)
    assert sorted(pool.label_version("m", "stable") for _ in range(2)) == ["a", "b"]
    assert pool.down() == [] and changes == [("b", False), ("b", True)]


def test_a_set_aside_replica_is_still_tried_when_no_other_answers():
    a, b = Replica("a"), Replica("b")
    pool = ReplicaPool([a, b], cooldown_s=60)
    b.failure = down("b")
    pool.label_version("m", "stable")
    pool.label_version("m", "stable")  # b set aside
    a.failure, b.failure = down("a"), None
    assert pool.label_version("m", "stable") == "b"  # the last resort answered
    a.failure, b.failure = down("a"), down("b")
    with pytest.raises(ServingUnavailableError, match="none of the 2 TF Serving replicas answers"):
        pool.label_version("m", "stable")


def test_a_refusal_other_than_unavailable_is_raised_without_trying_another_replica():
    a, b = Replica("a"), Replica("b")
    a.failure = b.failure = ServingError("NOT_FOUND: no such label", code="NOT_FOUND")
    pool = ReplicaPool([a, b])
    with pytest.raises(ServingError, match="NOT_FOUND"):
        pool.label_version("m", "canary")
    assert a.calls + b.calls == 1 and pool.down() == []


def test_one_replica_raises_its_own_error():
    only = Replica("a")
    only.failure = down("a")
    with pytest.raises(ServingUnavailableError, match="^a is down$"):
        ReplicaPool([only]).label_version("m", "stable")


def test_replicas_that_moved_are_located_again_and_asked_in_the_same_call():
    """The home's local servers started again on other ports: ``locate`` says where they run now;
    it is asked at most every ``relocate_s``, and a replica that did not move keeps its client."""
    a, b = Replica("a:1"), Replica("b:1")
    a.failure = b.failure = down("old ports")
    moved, located = Replica("b:2"), []
    changes = []
    pool = ReplicaPool(
        [a, b],
        locate=lambda: located.append(1) or [a, moved],
        relocate_s=60,
        on_health=lambda replica, up: changes.append((replica, up)),
    )
    assert pool.label_version("m", "stable") == "b:2"
    assert [client.grpc_target for client in pool.clients] == ["a:1", "b:2"] and pool.clients[0] is a
    assert ("b:2", True) in changes and pool.down() == ["a:1"]
    moved.failure = down("b:2")
    with pytest.raises(ServingUnavailableError, match="none of the 2"):
        pool.label_version("m", "stable")
    assert located == [1]  # not again within relocate_s
