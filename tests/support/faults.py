"""Run the real ``railyard`` CLI with one fault: the process kills itself (SIGKILL, no cleanup,
no hooks) the moment it reaches a named function, as a power cut or the OOM killer would
(with ``@N``: at its N-th call; the calls before run as usual).

    python -m tests.support.faults model_registry.stages:StageRegistry.register run --data ...
    python -m tests.support.faults infra.online_store.stream:acknowledge@20 ingest --until-idle
"""

from __future__ import annotations

import importlib
import itertools
import os
import signal
import sys


def die_at(target: str) -> None:
    target, _, nth = target.partition("@")
    module_name, path = target.split(":")
    owner_path, _, name = path.rpartition(".")
    owner = importlib.import_module(module_name)
    for part in filter(None, owner_path.split(".")):
        owner = getattr(owner, part)
    original = getattr(owner, name)  # the point must exist: a typo must not make a fault test pass
    calls = itertools.count(1)

    def killed(*args, **kwargs):
        if next(calls) >= int(nth or 1):
            os.kill(os.getpid(), signal.SIGKILL)
        return original(*args, **kwargs)

    setattr(owner, name, killed)


if __name__ == "__main__":
    die_at(sys.argv[1])
    from cli.main import main

    main(sys.argv[2:])
