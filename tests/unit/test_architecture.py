"""The layering docs/architecture.md describes, checked from the code's own imports (AST).

Every import counts, including those inside functions and under TYPE_CHECKING: a lazy import
is still a dependency.
"""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPO_ROOT

PACKAGES = ("railyard", "model_registry", "infra", "release", "tasks", "flows", "cli", "bench")
# What each package may import besides itself (lower layers only).
MAY_IMPORT = {
    "railyard": set(),
    "model_registry": {"railyard"},
    "infra": {"railyard", "model_registry"},
    "release": {"railyard", "model_registry", "infra"},
    "tasks": {"railyard", "model_registry", "infra", "release"},
    "flows": {"railyard", "model_registry", "infra", "release", "tasks"},
    "cli": {"railyard", "model_registry", "infra", "release", "tasks", "flows"},
    "bench": {"railyard", "model_registry", "infra", "release", "flows"},  # the library, never tasks or the CLI
}
# Inside infra: the protocol side imports no other part; the local server only the protocol side.
# An allowed name covers its submodules (a package allows all of its modules).
MAY_IMPORT_IN_INFRA = {
    "infra.tfserving.protocol": set(),
    "infra.tfserving.model_config": {"infra.tfserving.protocol"},
    "infra.tfserving.warmup": {"infra.tfserving.protocol"},
    "infra.tfserving.client": {"infra.tfserving.protocol"},
    "infra.tfserving.replicas": {"infra.tfserving.client", "infra.tfserving.protocol"},
    "infra.local_server": {
        "infra.tfserving.protocol",
        "infra.tfserving.model_config",
        "infra.tfserving.warmup",
        "infra.platform.service",
    },
    "infra.docker_launcher": set(),
    "infra.dask_cluster": set(),  # the cluster a partitioned feature build runs on
    # The embedded servers' one supervisor: it starts what it is given, knowing none of them.
    "infra.platform": set(),
    # The feature store and its event stream stand alone (the embedded server starts through the platform).
    "infra.online_store": {"infra.platform.service"},
    "infra.scoring": {"infra.online_store.store", "infra.tfserving.client", "infra.tfserving.protocol"},
    # The ranking service: the online store (features, candidates, the gray release's share and
    # live figures) and TF Serving's client side; never the rollout or the local server.
    "infra.ranking": {
        "infra.online_store",
        "infra.tfserving.client",
        "infra.tfserving.protocol",
        "infra.tfserving.replicas",
        "infra.scoring",
    },
    # The streaming scorer: the online store (its streams, the consumer loop, features), TF
    # Serving's client side and the one scoring path; never the rollout or the ranking service.
    "infra.streaming": {
        "infra.online_store",
        "infra.tfserving.client",
        "infra.tfserving.protocol",
        "infra.tfserving.replicas",
        "infra.scoring",
    },
}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_imports(path: Path) -> set[str]:
    """The project modules a file imports (``from a.b import c`` counts as a.b.c when c is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {name for name in names if name.split(".")[0] in PACKAGES}
    return found


def import_graph() -> dict[str, set[str]]:
    files = {module_name(path): path for package in PACKAGES for path in (REPO_ROOT / package).rglob("*.py")}
    graph = {}
    for name, path in files.items():
        # keep only names that are modules of the project (drop imported functions and classes)
        targets = {t if t in files else t.rpartition(".")[0] for t in project_imports(path)}
        graph[name] = {t for t in targets if t in files and t != name}
    return graph


GRAPH = import_graph()


def within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def test_the_graph_was_read():
    assert "cli.pipeline_commands" in GRAPH and "flows.retrain" in GRAPH["cli.pipeline_commands"]
    assert "infra.tfserving.protocol" in GRAPH["infra.tfserving.client"]


def test_packages_import_only_downward():
    upward = sorted(
        f"{module} -> {target}"
        for module, targets in GRAPH.items()
        for target in targets
        if (source := module.split(".")[0]) != (dest := target.split(".")[0]) and dest not in MAY_IMPORT[source]
    )
    assert upward == []


def test_railyard_is_the_bottom():
    assert not {t for m, ts in GRAPH.items() if within(m, "railyard") for t in ts if not within(t, "railyard")}


@pytest.mark.parametrize("part", sorted(MAY_IMPORT_IN_INFRA))
def test_infra_parts_keep_to_their_role(part):
    allowed = MAY_IMPORT_IN_INFRA[part]
    wrong = sorted(
        f"{module} -> {target}"
        for module, targets in GRAPH.items()
        if within(module, part)
        for target in targets
        if within(target, "infra") and not within(target, part) and not any(within(target, a) for a in allowed)
    )
    assert wrong == []


def test_only_the_cli_and_its_benchmark_import_the_scorer():
    importers = sorted(
        module
        for module, targets in GRAPH.items()
        if not within(module, "infra.streaming") and any(within(t, "infra.streaming") for t in targets)
    )
    assert importers == ["bench.bench_streaming", "cli.online_commands", "cli.serving_commands"]


def test_flows_share_only_the_release_orchestration():
    """One module per flow: a flow imports no other flow, only the steps they share."""
    wrong = sorted(
        f"{module} -> {target}"
        for module, targets in GRAPH.items()
        if within(module, "flows")
        for target in targets
        if within(target, "flows") and target != "flows.release_orchestration"
    )
    assert wrong == [] and "flows.release_orchestration" in GRAPH["flows.retrain"]


def test_the_store_base_knows_no_backend():
    assert (
        GRAPH["model_registry.store"] & {"model_registry.local", "model_registry.s3", "model_registry.factory"} == set()
    )


def test_no_import_cycles():
    """Tarjan's strongly connected components: any with more than one module is a cycle."""
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(GRAPH[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(GRAPH):
        if node not in index:
            visit(node)
    assert cycles == []


def test_the_checks_catch_a_cycle_and_an_upward_import():
    """The walker itself: a cycle and an upward import in a throwaway tree are found."""
    global GRAPH
    saved = GRAPH
    try:
        GRAPH = {"railyard.a": {"railyard.b"}, "railyard.b": {"railyard.a"}}
        with pytest.raises(AssertionError):
            test_no_import_cycles()
        GRAPH = {"railyard.a": {"tasks.x"}, "tasks.x": set()}
        with pytest.raises(AssertionError):
            test_packages_import_only_downward()
    finally:
        GRAPH = saved


def test_the_serving_client_loads_without_tensorflow_polars_or_pyarrow():
    """A ranking service or a smoke check imports the client: it must stay light."""
    probe = (
        "import json, sys; import infra.tfserving.client; "
        "print(json.dumps([m for m in ('tensorflow', 'polars', 'pyarrow') if m in sys.modules]))"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert json.loads(result.stdout) == []
