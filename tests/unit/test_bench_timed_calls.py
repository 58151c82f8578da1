"""The bench's MLflow timer: every outer call counted once, the class restored afterwards."""

import time

import pytest

from bench.run import timed_calls


class Client:
    def outer(self):
        time.sleep(0.02)
        return self.inner() + 1

    def inner(self):
        time.sleep(0.02)
        return 1

    def fails(self):
        raise ValueError("boom")

    @staticmethod
    def helper():
        return "static"

    def _private(self):
        return "private"


def test_nested_calls_count_once_with_their_caller():
    client = Client()
    with timed_calls(Client) as spent:
        assert client.outer() == 2
        assert client.inner() == 1
        with pytest.raises(ValueError):
            client.fails()
        assert client.helper() == "static" and client._private() == "private"
    assert spent["calls"] == 3  # outer (with its inner), inner, fails
    assert spent["seconds"] >= 0.06


def test_the_class_is_restored_even_when_the_block_fails():
    originals = dict(vars(Client))
    with pytest.raises(RuntimeError):
        with timed_calls(Client):
            assert Client.outer is not originals["outer"]
            raise RuntimeError("flow failed")
    assert all(vars(Client)[name] is method for name, method in originals.items())
    with timed_calls(Client) as spent:
        pass
    Client().outer()
    assert spent["calls"] == 0
