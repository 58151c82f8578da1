"""Ports held by a program other than Railyard's servers, for tests of taken ports."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager


@contextmanager
def held(*ports: int) -> Iterator[list[int]]:
    """Listen on 127.0.0.1 at each port (0: a free one) for the block; yields the port numbers.
    A port another program listens on already stays held by that one."""
    with ExitStack() as stack:
        numbers = []
        for port in ports:
            squatter = stack.enter_context(socket.socket())
            squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a port in TIME_WAIT is free
            try:
                squatter.bind(("127.0.0.1", port))
                squatter.listen()
            except OSError:
                numbers.append(port)  # held already
                continue
            numbers.append(squatter.getsockname()[1])
        yield numbers
