from prefect.artifacts import create_markdown_artifact, create_table_artifact

from infra.rollout import smoke
from infra.tfserving.protocol import CANARY
from infra.tfserving.target import ServingTarget
from railyard import contract, tracking
from railyard.settings import Settings
from tasks.common import MINUTES, railyard_task


@railyard_task(name="smoke-tests", timeout_seconds=10 * MINUTES)
def smoke_tests(target: ServingTarget, settings: Settings, version: int, run_id: str) -> smoke.SmokeReport:
    """Check the canary through REST and gRPC on every replica; record the outcome in MLflow and the Prefect UI."""
    version_dir = target.model_root / settings.model_name / str(version)
    golden, served = contract.read_golden(version_dir), contract.read_contract(version_dir)
    with target.clients(attempts=settings.serving_attempts) as clients:
        report = smoke.run_smoke_tests(
            clients, settings.model_name, version, golden, settings.smoke_budget(), label=CANARY, served=served
        )
    tracking.log_metrics(
        settings,
        run_id,
        {"smoke_passed": float(report.passed), "smoke_errors": report.errors}
        | {f"smoke_latency_{name}_ms": value for name, value in report.latency_ms.items()},
    )
    tracking.log_dict(settings, run_id, report.as_dict(), f"smoke/version-{version}.json")
    create_table_artifact(
        key="smoke-tests",
        table=[{"check": c.name, "passed": c.passed, "detail": c.detail} for c in report.checks],
        description=report.summary().splitlines()[0],
    )
    if not report.passed:
        create_markdown_artifact(
            key="smoke-tests-failed",
            markdown=f"```\n{report.summary()}\n```\n\nThe canary was rolled back; `stable` is unchanged.",
        )
    return report
