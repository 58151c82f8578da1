"""Which kind a run trains: ``RAILYARD_MODEL_KIND``, a registered name or ``package.module:object``.

Adding a shipped kind is one module in ``railyard/kinds/`` and one line in ``KINDS``.
``resolve_kind`` finds and checks the object, ``load_kind`` also reads its config from the
environment; both refuse (``BadModelKind``, exit 2) before any data is read.
"""

from __future__ import annotations

import importlib
import inspect
import re
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from railyard.errors import Refused
from railyard.kinds.base import DEFAULT_OUTPUT, Kind, KindConfig
from railyard.settings import SettingsError, settings_problems

# Registered name -> where its kind object lives.
KINDS = {
    "neural_cf": "railyard.kinds.neural_cf:KIND",
    "fresh_wd": "railyard.kinds.fresh_wd:KIND",
}
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
OUTPUT_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


class BadModelKind(Refused):
    """RAILYARD_MODEL_KIND names no usable kind, or the kind's settings are bad."""

    next_step = (
        "set RAILYARD_MODEL_KIND to a registered kind (" + ", ".join(KINDS) + ") or to package.module:object "
        "importable here (see railyard/kinds/base.py); nothing was trained"
    )


@dataclass(frozen=True, eq=False)
class LoadedKind:
    """A resolved kind and its config, as one run trains it."""

    spec: str  # what RAILYARD_MODEL_KIND said
    kind: Kind
    config: KindConfig

    @property
    def name(self) -> str:
        return self.kind.name

    @property
    def output(self) -> str:
        return getattr(self.kind, "output", DEFAULT_OUTPUT)

    def settings(self) -> dict[str, Any]:
        """The kind's config as plain JSON values."""
        return self.config.model_dump(mode="json")

    def params(self) -> dict[str, Any]:
        """What MLflow records about the kind: which, what it reads, its settings (``<name>.<field>``)."""
        return {
            "model_kind": self.name,
            "model_kind_spec": self.spec,
            "model_kind_reads": ",".join(self.kind.reads),
        } | {f"{self.name}.{key}": value for key, value in self.settings().items()}

    def source(self) -> str:
        """The source of the module that defines the kind object ('' when it has none, e.g. built in a REPL)."""
        try:
            return inspect.getsource(inspect.getmodule(self.kind) or type(self.kind))
        except (OSError, TypeError):
            return ""


def resolve_kind(spec: str) -> Kind:
    """The kind object ``spec`` names (a registered name or ``package.module:object``), checked."""
    reference = KINDS.get(spec, spec)
    module_name, colon, attribute = reference.partition(":")
    if not colon or not module_name or not attribute:
        raise BadModelKind(
            f"RAILYARD_MODEL_KIND={spec!r} is neither a registered kind ({', '.join(KINDS)}) nor package.module:object"
        )
    try:
        found: Any = importlib.import_module(module_name)
    except ImportError as error:
        raise BadModelKind(f"RAILYARD_MODEL_KIND={spec!r}: cannot import {module_name}: {error}") from None
    for part in attribute.split("."):
        if not hasattr(found, part):
            raise BadModelKind(f"RAILYARD_MODEL_KIND={spec!r}: {module_name} has no {attribute}")
        found = getattr(found, part)
    kind = found() if inspect.isclass(found) else found
    check_kind(kind, spec)
    return kind


def check_kind(kind: Any, spec: str) -> None:
    """The protocol's members are there and well-formed; reads names declared aggregates."""
    from railyard.model_input import declared_aggregates

    problems = []
    name = getattr(kind, "name", None)
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        problems.append(f"name must be lower-case letters, digits and '_' (got {name!r})")
    config = getattr(kind, "Config", None)
    if not (inspect.isclass(config) and issubclass(config, KindConfig)):
        problems.append("Config must be a subclass of railyard.kinds.base.KindConfig")
    reads = getattr(kind, "reads", None)
    if not isinstance(reads, tuple) or not all(isinstance(item, str) for item in reads):
        problems.append(f"reads must be a tuple of declared aggregate names (got {reads!r})")
    else:
        unknown = [item for item in reads if item not in declared_aggregates()]
        if unknown:
            problems.append(
                f"reads {', '.join(map(repr, unknown))}, which no declaration names "
                f"(declared: {', '.join(declared_aggregates())})"
            )
    if not callable(getattr(kind, "build", None)):
        problems.append("build(context, config) is missing")
    output = getattr(kind, "output", DEFAULT_OUTPUT)
    if not isinstance(output, str) or not OUTPUT_PATTERN.fullmatch(output):
        problems.append(f"output must be an identifier (got {output!r})")
    for optional in ("optimizer", "fit", "metrics"):
        if hasattr(kind, optional) and not callable(getattr(kind, optional)):
            problems.append(f"{optional} must be callable")
    if problems:
        raise BadModelKind(f"RAILYARD_MODEL_KIND={spec!r} is not a usable kind: {'; '.join(problems)}")


def load_kind(spec: str, **overrides: Any) -> LoadedKind:
    """The kind ``spec`` names, with its config read from ``RAILYARD_<NAME>_*`` (``overrides``
    on top, as a test or a benchmark sets them)."""
    kind = resolve_kind(spec)
    prefix = f"RAILYARD_{kind.name.upper()}_"
    try:
        config = kind.Config(_env_prefix=prefix, **overrides)
    except ValidationError as error:
        raise SettingsError(f"model kind {kind.name!r}: {settings_problems(error, prefix)}") from None
    return LoadedKind(spec, kind, config)
