"""What ``docker compose config`` does before it needs an engine, for a machine without Docker:

1. parse the YAML (PyYAML reads YAML 1.1: quote ports and ``"no"``, as compose's docs advise);
2. interpolate ``${VAR}``, ``${VAR:-default}``, ``${VAR:?error}``, ... and ``$$`` from an env file;
3. validate against the compose-spec JSON schema that Docker Compose v2.40.3 embeds
   (``infra/stack/compose-schema/``, checked with the ``jsonschema`` package Prefect already depends on);
4. make the checks compose makes after the schema (port and duration syntax, undefined services
   and volumes, dependency cycles) plus a few that only ``build``/``up`` would catch (restart
   policies, image references, build contexts and targets).

When this was written, a real ``docker-compose config`` (v2.40.3) accepted the stack's file and
printed the same interpolated values (tests/stack/test_compose.py).
"""

from __future__ import annotations

import copy
import functools
import ipaddress
import re
from collections.abc import Mapping
from pathlib import Path

import jsonschema
import yaml

from tests.support import REPO_ROOT

STACK = REPO_ROOT / "infra" / "stack"
SCHEMA_FILE = STACK / "compose-schema" / "compose-spec.json"


class ComposeError(ValueError):
    """The compose file would be refused; the message names every problem found."""


NAME = re.compile(r"[_A-Za-z][_A-Za-z0-9]*")
BRACED = re.compile(r"([_A-Za-z][_A-Za-z0-9]*)(?:(:?[-+?])(.*))?", re.DOTALL)


class Interpolator:
    """compose-spec interpolation: ``$$``, ``$VAR``, ``${VAR}``, ``${VAR[:]-|?|+...}``, nested."""

    def __init__(self, env: Mapping[str, str]):
        self.env = env
        self.errors: list[str] = []
        self.unset: set[str] = set()  # compose warns and substitutes "" for these

    def value(self, name: str) -> str | None:
        return self.env.get(name)

    def string(self, text: str, where: str) -> str:
        out, i = [], 0
        while i < len(text):
            if text[i] != "$":
                out.append(text[i])
                i += 1
            elif text.startswith("$$", i):
                out.append("$")
                i += 2
            elif text.startswith("${", i):
                end = self._closing_brace(text, i + 2)
                if end is None:
                    self.errors.append(f"{where}: invalid interpolation format (unclosed '${{'): {text!r}")
                    return text
                out.append(self._braced(text[i + 2 : end], text, where))
                i = end + 1
            elif match := NAME.match(text, i + 1):
                out.append(self._lookup(match.group(), where))
                i = match.end()
            else:  # a lone `$` (e.g. "$@") stays as it is, as compose leaves it
                out.append("$")
                i += 1
        return "".join(out)

    @staticmethod
    def _closing_brace(text: str, start: int) -> int | None:
        depth, i = 1, start
        while i < len(text):
            if text.startswith("${", i):
                depth, i = depth + 1, i + 2
                continue
            if text[i] == "}":
                depth -= 1
                if depth == 0:
                    return i
            i += 1
        return None

    def _lookup(self, name: str, where: str) -> str:
        value = self.value(name)
        if value is None:
            self.unset.add(name)
            return ""
        return value

    def _braced(self, body: str, text: str, where: str) -> str:
        match = BRACED.fullmatch(body)
        if not match:
            self.errors.append(f"{where}: invalid interpolation format: {text!r} (escape a literal $ as $$)")
            return ""
        name, operator, argument = match.groups()
        value = self.value(name)
        is_set, non_empty = value is not None, bool(value)
        if operator is None:
            return self._lookup(name, where)
        present = non_empty if operator.startswith(":") else is_set
        kind = operator[-1]
        if kind == "-":
            return value if present else self.string(argument, where)
        if kind == "+":
            return self.string(argument, where) if present else ""
        if not present:  # "?": required
            message = self.string(argument, where)
            self.errors.append(f"{where}: required variable {name} is missing a value: {message}")
            return ""
        return value

    def walk(self, node, where: str = ""):
        if isinstance(node, dict):
            return {key: self.walk(value, f"{where}.{key}" if where else str(key)) for key, value in node.items()}
        if isinstance(node, list):
            return [self.walk(item, f"{where}[{index}]") for index, item in enumerate(node)]
        if isinstance(node, str):
            return self.string(node, where)
        return node


def read_env_file(path: Path) -> dict[str, str]:
    """A compose env file: KEY=VALUE lines, `#` comments, optional quotes and `export`."""
    env = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        else:
            value = value.split(" #", 1)[0].rstrip()
        env[key.strip()] = value
    return env


@functools.cache
def schema_validator() -> jsonschema.Draft7Validator:
    schema = yaml.safe_load(SCHEMA_FILE.read_text())  # JSON is YAML
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def schema_errors(model: dict) -> list[str]:
    errors = []
    for error in schema_validator().iter_errors(model):
        while error.context:  # oneOf/anyOf: report the branch that got furthest into the value
            error = max(error.context, key=lambda branch: (len(branch.absolute_path), branch.validator != "type"))
        path = ".".join(str(part) for part in error.absolute_path) or "(top level)"
        errors.append(f"{path}: {error.message}")
    return sorted(errors)


PORT_SPEC = re.compile(
    r"(?:(?:(?P<ip>\[[0-9A-Fa-f:.]+\]|[^:\[\]]+):)?(?P<published>\d+(?:-\d+)?)?:)?"
    r"(?P<target>\d+(?:-\d+)?)(?:/(?P<protocol>tcp|udp|sctp))?"
)
DURATION = re.compile(r"0|(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h))+")
RESTART = re.compile(r"no|always|unless-stopped|on-failure(?::\d+)?")
IMAGE_REFERENCE = re.compile(
    r"(?:(?:[a-zA-Z0-9-]+(?:\.[a-zA-Z0-9-]+)+(?::\d+)?|[a-zA-Z0-9-]+:\d+|localhost)/)?"  # registry: a dot or a port
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"  # path
    r"(?::[\w][\w.-]{0,127})?(?:@sha256:[0-9a-f]{64})?"  # tag, digest
)
MOUNT_MODES = {"ro", "rw", "z", "Z", "nocopy", "cached", "delegated", "consistent"} | {
    f"{prefix}{kind}" for prefix in ("", "r") for kind in ("shared", "slave", "private")
}


def port_range(text: str, allow_zero: bool) -> tuple[int, int] | None:
    low, _, high = text.partition("-")
    start, end = int(low), int(high or low)
    if start > end or end > 65535 or start < (0 if allow_zero else 1):
        return None
    return start, end


def port_errors(where: str, port) -> list[str]:
    if isinstance(port, dict):
        problems = []
        if not isinstance(port.get("target"), int) or not 1 <= port["target"] <= 65535:
            problems.append(f"{where}: target must be a port number, got {port.get('target')!r}")
        if "host_ip" in port:
            problems += ip_errors(where, port["host_ip"])
        if "published" in port and not re.fullmatch(r"\d+(-\d+)?", str(port["published"])):
            problems.append(f"{where}: invalid published port {port['published']!r}")
        return problems
    if isinstance(port, int):
        return [] if 1 <= port <= 65535 else [f"{where}: invalid port {port}"]
    match = PORT_SPEC.fullmatch(port)
    if not match:
        return [f"{where}: invalid port specification {port!r}"]
    problems = ip_errors(where, match["ip"].strip("[]")) if match["ip"] else []
    target = port_range(match["target"], allow_zero=False)
    published = port_range(match["published"], allow_zero=True) if match["published"] else None
    if target is None or (match["published"] and published is None):
        problems.append(f"{where}: port number out of range in {port!r}")
    elif published and published[1] - published[0] not in (0, target[1] - target[0]):
        problems.append(f"{where}: published and target port ranges differ in size in {port!r}")
    return problems


def ip_errors(where: str, host: str) -> list[str]:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return [f"{where}: invalid IP address {host!r} (compose binds to addresses, not names)"]
    return []


def mount_errors(where: str, mount, declared_volumes: set[str]) -> list[str]:
    if isinstance(mount, dict):
        if mount.get("type") == "volume" and mount.get("source") and mount["source"] not in declared_volumes:
            return [f"{where}: refers to undefined volume {mount['source']}"]
        return []
    parts = mount.split(":")
    if len(parts) == 1:
        source, target, modes = None, parts[0], []
    else:
        source, target, modes = parts[0], parts[1], parts[2].split(",") if len(parts) > 2 else []
    problems = []
    if len(parts) > 3 or not target.startswith("/"):
        problems.append(f"{where}: invalid mount {mount!r} (SOURCE:/absolute/target[:MODE])")
    if source and not source.startswith((".", "/", "~")) and source not in declared_volumes:
        problems.append(f"{where}: refers to undefined volume {source}")
    problems += [f"{where}: unknown mount mode {mode!r}" for mode in modes if mode not in MOUNT_MODES]
    return problems


def dockerfile_stages(path: Path) -> list[str]:
    return [
        match.group(1)
        for line in path.read_text().splitlines()
        if (match := re.match(r"FROM\s+\S+\s+AS\s+(\S+)", line.strip(), re.IGNORECASE))
    ]


def build_errors(where: str, build, compose_dir: Path) -> list[str]:
    build = {"context": build} if isinstance(build, str) else build
    context = (compose_dir / build.get("context", ".")).resolve()
    if not context.is_dir():
        return [f"{where}: build context {context} does not exist"]
    dockerfile = context / build.get("dockerfile", "Dockerfile")
    if not dockerfile.is_file():
        return [f"{where}: Dockerfile {dockerfile} does not exist"]
    if "target" in build and build["target"] not in dockerfile_stages(dockerfile):
        return [f"{where}: {dockerfile.name} has no stage named {build['target']!r}"]
    return []


def dependency_cycle(services: dict) -> list[str] | None:
    state: dict[str, str] = {}

    def visit(name: str, trail: list[str]) -> list[str] | None:
        if state.get(name) == "done":
            return None
        if state.get(name) == "active":
            return trail[trail.index(name) :] + [name]
        state[name] = "active"
        for dependency in depends_on(services.get(name, {})):
            if cycle := visit(dependency, trail + [name]):
                return cycle
        state[name] = "done"
        return None

    for service in services:
        if cycle := visit(service, []):
            return cycle
    return None


def depends_on(service: dict) -> dict[str, dict]:
    deps = service.get("depends_on", {})
    return {name: {"condition": "service_started"} for name in deps} if isinstance(deps, list) else deps


def semantic_errors(model: dict, compose_dir: Path) -> list[str]:
    services = model.get("services") or {}
    declared_volumes = set(model.get("volumes") or {})
    problems = []
    for name, service in services.items():
        where = f"services.{name}"
        if "image" not in service and "build" not in service:
            problems.append(f"{where}: has neither an image nor a build context")
        if "image" in service and not IMAGE_REFERENCE.fullmatch(service["image"]):
            problems.append(f"{where}.image: invalid reference format {service['image']!r}")
        if "build" in service:
            problems += build_errors(f"{where}.build", service["build"], compose_dir)
        for index, port in enumerate(service.get("ports", [])):
            problems += port_errors(f"{where}.ports[{index}]", port)
        for index, mount in enumerate(service.get("volumes", [])):
            problems += mount_errors(f"{where}.volumes[{index}]", mount, declared_volumes)
        for key in ("interval", "timeout", "start_period", "start_interval"):
            value = service.get("healthcheck", {}).get(key)
            if value is not None and not DURATION.fullmatch(str(value)):
                problems.append(f"{where}.healthcheck.{key}: invalid duration {value!r} (e.g. 10s, 1m30s)")
        if "stop_grace_period" in service and not DURATION.fullmatch(str(service["stop_grace_period"])):
            problems.append(f"{where}.stop_grace_period: invalid duration {service['stop_grace_period']!r}")
        if "restart" in service and not RESTART.fullmatch(str(service["restart"])):
            problems.append(f"{where}.restart: invalid restart policy {service['restart']!r}")
        for dependency in depends_on(service):
            if dependency not in services:
                problems.append(f"{where}.depends_on: depends on undefined service {dependency!r}")
            elif dependency == name:
                problems.append(f"{where}.depends_on: a service cannot depend on itself")
    if not problems and (cycle := dependency_cycle(services)):
        problems.append(f"dependency cycle detected: {' -> '.join(cycle)}")
    return problems


def load_compose(
    source: str | dict, env: Mapping[str, str], compose_dir: Path = STACK, unset: set[str] | None = None
) -> dict:
    """The compose model as `docker compose config` would print it, or ComposeError.

    Variables used without a default and absent from ``env`` (compose warns and uses "") are
    added to ``unset``.
    """
    raw = yaml.safe_load(source) if isinstance(source, str) else copy.deepcopy(source)
    if not isinstance(raw, dict):
        raise ComposeError("top level: a compose file is a mapping")
    interpolator = Interpolator(env)
    model = interpolator.walk(raw)
    if interpolator.errors:
        raise ComposeError("\n".join(interpolator.errors))
    if problems := schema_errors(model) or semantic_errors(model, compose_dir):
        raise ComposeError("\n".join(problems))
    if unset is not None:
        unset |= interpolator.unset
    return model
