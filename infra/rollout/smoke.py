"""Post-deploy smoke tests against a served version, through TF Serving's real protocols.

Like TFX's InfraValidator, but after the push and on the live server: the version is
AVAILABLE, its metadata has both signatures of the contract (ids only, and ids plus the online
store's aggregates) returning the output its version's contract names (``served``: the kind's),
the golden requests of each signature stored with the model at training
time get the offline SavedModel's answers (REST and gRPC, by version and by label), and a short
bounded burst of requests stays within a latency budget with no errors.
A check that raises is a failed check with the error as its detail: the report is always whole.
Given one client per replica, the whole suite runs against each replica, every check's name
suffixed with ``@<replica's gRPC address>``; the burst figures add up (latency: the worst replica's).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import numpy as np

from infra.tfserving.client import ServingClient
from infra.tfserving.protocol import AVAILABLE
from railyard import contract
from railyard.configs import SmokeBudget


@dataclass(frozen=True)
class SmokeCheck:
    name: str
    passed: bool
    detail: str


@dataclass
class SmokeReport:
    model: str
    version: int
    label: str
    checks: list[SmokeCheck] = field(default_factory=list)
    latency_ms: dict[str, float] = field(default_factory=dict)  # p50, p95, p99, max
    requests: int = 0
    errors: int = 0

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(check.passed for check in self.checks)

    def failures(self) -> list[SmokeCheck]:
        return [check for check in self.checks if not check.passed]

    def as_dict(self) -> dict:
        return asdict(self) | {"passed": self.passed}

    def summary(self) -> str:
        head = f"smoke tests of {self.model} version {self.version} ({self.label}): " + (
            "passed" if self.passed else f"{len(self.failures())} of {len(self.checks)} checks failed"
        )
        lines = [f"  {'ok  ' if c.passed else 'FAIL'} {c.name}: {c.detail}" for c in self.checks]
        return "\n".join([head, *lines])


def run_smoke_tests(
    client: ServingClient | Sequence[ServingClient],
    model: str,
    version: int,
    golden: dict,
    budget: SmokeBudget,
    label: str,
    *,
    served: dict,
) -> SmokeReport:
    """``golden`` and ``served``: the version's golden requests and contract (``contract.read_golden``,
    ``contract.read_contract``)."""
    report = SmokeReport(model=model, version=version, label=label)
    replicas = list(client) if isinstance(client, Sequence) else [client]
    for replica in replicas:
        suffix = f"@{replica.grpc_target}" if len(replicas) > 1 else ""
        _run_suite(replica, model, version, golden, served["output"], budget, label, report, suffix)
    return report


def _run_suite(
    client, model, version, golden, output: str, budget: SmokeBudget, label, report: SmokeReport, suffix: str
) -> None:
    def check(name: str, run: Callable[[], str]) -> None:
        name += suffix
        try:
            report.checks.append(SmokeCheck(name, True, run()))
        except Exception as exc:  # noqa: BLE001 - any failure is this check's verdict
            report.checks.append(SmokeCheck(name, False, f"{type(exc).__name__}: {exc}"))

    check("status", lambda: _status(client, model, version))
    check("metadata", lambda: _signatures(client.metadata_rest(model, version), version, output))
    for signature in contract.SIGNATURES:
        requests = golden[signature]
        expected = np.asarray(requests["predictions"], dtype=np.float64).reshape(-1)
        for protocol in ("rest", "grpc"):
            for target in ({"version": version}, {"label": label}):
                where = f"{signature} at {f'version {version}' if 'version' in target else f'label {label}'}"
                check(
                    f"golden_{signature}_{protocol}_{next(iter(target))}",
                    lambda s=signature, r=requests, e=expected, p=protocol, t=target, w=where: _golden(
                        client, model, s, r["instances"], e, output, budget, p, t, w
                    ),
                )
    instances = golden[contract.SIGNATURE_NAME]["instances"]
    check("latency_burst", lambda: _burst(client, model, version, instances, budget, report))


def _status(client: ServingClient, model: str, version: int) -> str:
    (status,) = client.model_status(model, version)
    if status.state != AVAILABLE:
        raise AssertionError(f"state {status.state} ({status.error_code}: {status.error_message})")
    return "AVAILABLE"


def _signatures(metadata: dict, version: int, output: str) -> str:
    served = str(metadata["model_spec"]["version"])
    if served != str(version):
        raise AssertionError(f"metadata is for version {served}, not {version}")
    described = []
    for name in contract.SIGNATURES:
        signature = metadata["metadata"]["signature_def"]["signature_def"].get(name)
        if signature is None:
            raise AssertionError(f"the served model has no signature {name}")
        inputs = {key: spec["dtype"] for key, spec in signature["inputs"].items()}
        outputs = {key: spec["dtype"] for key, spec in signature["outputs"].items()}
        expected_inputs, expected_outputs = contract.signature_dtypes(name, output)
        if inputs != expected_inputs or outputs != expected_outputs:
            raise AssertionError(
                f"signature {name} has inputs {inputs}, outputs {outputs}; expected {expected_inputs} -> {expected_outputs}"
            )
        described.append(contract.describe(name, output))
    return "; ".join(described)


def _golden(client, model, signature, instances, expected, output, budget, protocol, target, where) -> str:
    if protocol == "rest":
        answer = client.predict_rest(model, instances, signature_name=signature, **target)
    else:
        answer = client.predict_grpc(model, instances, signature_name=signature, **target)[output]
    served = np.asarray(answer, dtype=np.float64).reshape(-1)
    if served.shape != expected.shape:
        raise AssertionError(f"{len(served)} predictions for {len(expected)} golden requests at {where}")
    worst = float(np.max(np.abs(served - expected))) if len(expected) else 0.0
    if not worst <= budget.tolerance:
        raise AssertionError(f"served scores differ from the offline model by up to {worst:.3g} at {where}")
    return f"{len(expected)} golden predictions at {where} within {worst:.2g} of offline"


def _burst(client, model, version, instances, budget: SmokeBudget, report: SmokeReport) -> str:
    def one(index: int) -> float | None:
        started = time.perf_counter()
        try:
            client.predict_rest(model, [instances[index % len(instances)]], version=version)
        except Exception:  # noqa: BLE001 - counted, reported as the error rate
            return None
        return (time.perf_counter() - started) * 1000

    with ThreadPoolExecutor(max_workers=budget.concurrency) as pool:
        timings = list(pool.map(one, range(budget.requests)))
    ok = np.array([t for t in timings if t is not None])
    errors = len(timings) - len(ok)
    report.requests += len(timings)
    report.errors += errors
    latency_ms = {}
    if len(ok):
        latency_ms = {
            name: round(float(np.percentile(ok, q)), 3)
            for name, q in (("p50", 50), ("p95", 95), ("p99", 99), ("max", 100))
        }
        report.latency_ms = {name: max(value, report.latency_ms.get(name, value)) for name, value in latency_ms.items()}
    detail = f"{len(timings)} requests x{budget.concurrency}: {errors} errors, latency {latency_ms} ms"
    if errors:
        raise AssertionError(detail)
    if latency_ms["p95"] > budget.p95_ms:
        raise AssertionError(f"{detail}; p95 over the {budget.p95_ms:g} ms budget")
    return detail
