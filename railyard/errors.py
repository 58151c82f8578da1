"""One root for the errors Railyard raises on purpose, with what the user should do next.

The CLI exits with an error's ``exit_code`` and prints its message on one ``error:`` line; the
retrain flow's failure hook announces its ``next_step``. Two kinds:

- ``Refused``: the input, the model or the request was refused and nothing changed (exit 2);
  running again unchanged gives the same answer.
- everything else (exit 1): a component did not answer or broke; running again later may work.
"""

from __future__ import annotations

DEFAULT_NEXT_STEP = "read the flow run's logs; production keeps serving the last approved version"
# For a refused stage change or rollback.
SEE_STATUS = "nothing changed; `railyard status` lists every version and its stage"


class RailyardError(Exception):
    exit_code = 1
    next_step = DEFAULT_NEXT_STEP


class Refused(RailyardError):
    """The request, the data or the model was refused; nothing was changed."""

    exit_code = 2


class DataLoadError(Refused, ValueError):
    """Input data that cannot be read; the message names the file and the problem."""

    next_step = "fix the input data named in the message and start the run again"


class PortTaken(Refused):
    """A port set for one of Railyard's embedded servers is held by another program: nothing was started."""

    def __init__(self, message: str, setting: str) -> None:
        super().__init__(message)
        self.next_step = (
            f"set {setting} to a free port (0: any free port), or leave it unset (its default port when free, "
            "else any free port); nothing was started"
        )


class ModelRejected(Refused):
    """The evaluation gate did not bless the model: nothing was published."""

    next_step = "see the evaluation-gate table; nothing was published and production is unchanged"


class SmokeTestsFailed(Refused):
    """The canary failed its smoke tests: it was unloaded and the version rejected."""

    next_step = "see the smoke-tests artifact; the canary was unloaded and stable is unchanged"


class CanaryRolledBack(Refused):
    """The canary went over its budget on live traffic during the bake: it was rolled back."""

    next_step = (
        "see the bake's figures in the run's outcome; the canary was unloaded, its share set to 0, stable is unchanged"
    )


def next_step(error: object) -> str:
    """What to do after ``error`` (anything a failed run left as its result)."""
    return error.next_step if isinstance(error, RailyardError) else DEFAULT_NEXT_STEP
