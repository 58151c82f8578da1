"""Run the real ``railyard`` CLI with one fault: the process kills itself (SIGKILL, no cleanup,
no hooks) the moment it reaches a named function, as a power cut or the OOM killer would.

    python -m tests.support.faults model_registry.stages:StageRegistry.register run --data ...
"""

from __future__ import annotations

import importlib
import os
import signal
import sys


def die_at(target: str) -> None:
    module_name, path = target.split(":")
    owner_path, _, name = path.rpartition(".")
    owner = importlib.import_module(module_name)
    for part in filter(None, owner_path.split(".")):
        owner = getattr(owner, part)
    getattr(owner, name)  # the point must exist: a typo must not make a fault test pass

    def killed(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    setattr(owner, name, killed)


if __name__ == "__main__":
    die_at(sys.argv[1])
    from cli.main import main

    main(sys.argv[2:])
