from prefect.artifacts import create_markdown_artifact, create_table_artifact

from infra import deploy, smoke
from infra.tfserving_config import CANARY
from railyard import tracking
from railyard.settings import Settings
from tasks.common import MINUTES, railyard_task


def budget(settings: Settings) -> smoke.SmokeBudget:
    return smoke.SmokeBudget(
        p95_ms=settings.smoke_p95_ms, requests=settings.smoke_requests, concurrency=settings.smoke_concurrency
    )


@railyard_task(name="smoke-tests", timeout_seconds=10 * MINUTES)
def smoke_tests(target: deploy.ServingTarget, settings: Settings, version: int, run_id: str) -> smoke.SmokeReport:
    """Check the canary through REST and gRPC; record the outcome in MLflow and the Prefect UI."""
    golden = smoke.read_golden(target.model_root / settings.model_name / str(version))
    with target.client(attempts=settings.serving_attempts) as client:
        report = smoke.run_smoke_tests(client, settings.model_name, version, golden, budget(settings), label=CANARY)
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
