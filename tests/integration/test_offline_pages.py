"""What a person sees in a browser with no internet: the Data Docs validation pages, the MLflow
UI's experiment, the Prefect UI's daily deployment. (The ranking service's /docs:
tests/integration/test_ranking.py.)"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request

import polars as pl
import pytest
from selenium.webdriver.common.by import By

from model_registry.stages import StageRegistry
from railyard import tracking, validation
from railyard.configs import ValidationBounds
from railyard.loaders import RATINGS_SCHEMA
from railyard.settings import Settings
from tests.support.browser import computed, screenshot, wait_for_text
from tests.support.mlflow_ui import mlflow_ui

pytestmark = pytest.mark.timeout(300)
BOUNDS = ValidationBounds(min_rows=20, max_rows=10_000, min_positive_rate=0.1, max_positive_rate=0.9)


def _ratings(count: int = 200) -> pl.DataFrame:
    rows = [(1 + i % 17, 1 + i % 23, [1.5, 4.0, 3.0, 7.0][i % 4], 1_600_000_000 + i * 60) for i in range(count)]
    return pl.DataFrame(rows, schema=RATINGS_SCHEMA, orient="row")  # every 4th rating out of range


def test_a_data_docs_page_keeps_its_styles_scripts_and_links_with_no_network(tmp_path, offline_browser):
    report_dir = tmp_path / "reports" / "flow-run-7"
    page = validation.validate_ratings(_ratings(), BOUNDS, report_dir).html_report
    offline_browser.get(page.as_uri())
    wait_for_text(offline_browser, "Overview")
    screenshot(offline_browser, "data-docs-offline")
    # Bootstrap's rules apply (a browser's defaults: `separate` tables, block navbars).
    assert computed(offline_browser, "table.table", "border-collapse") == "collapse"
    assert computed(offline_browser, "nav.navbar", "display") == "flex"
    failed_icon = offline_browser.find_element(By.CSS_SELECTOR, ".fa-times")
    assert (
        offline_browser.execute_script("return getComputedStyle(arguments[0], '::before').content", failed_icon)
        == '"✖"'
    )
    logo = offline_browser.find_element(By.CSS_SELECTOR, ".navbar-brand img")
    assert offline_browser.execute_script("return arguments[0].naturalWidth", logo) > 0  # not a broken image
    # jQuery and Bootstrap's scripts run: "Show more info..." opens the run's details.
    offline_browser.find_element(By.PARTIAL_LINK_TEXT, "Show more info").click()
    shown = wait_for_text(offline_browser, "Run Name")
    assert "flow-run-7" in shown and "__none__" not in shown
    offline_browser.find_element(By.LINK_TEXT, "Home").click()
    wait_for_text(offline_browser, "Validation reports of run flow-run-7")
    assert computed(offline_browser, ".list-group", "display") == "flex"
    offline_browser.find_element(By.LINK_TEXT, "raw_ratings").click()
    wait_for_text(offline_browser, "Overview")


def test_the_mlflow_experiment_opens_on_its_training_runs_with_the_version_beside_its_run(
    railyard_home, tmp_path, offline_browser
):
    """MLflow 3.17's UI opens an experiment in its GenAI view unless the link says
    `workflowType=machine_learning` or the browser chose **Model training** once (the experiment's
    `mlflow.experimentKind` tag no longer decides): the README says both. The runs table's Models
    column shows the version; the run's page stays in the training view."""
    settings = Settings()
    run_id = tracking.start_run(settings, "recmodel-training", {"railyard.model": "recmodel"})
    tracking.log_metrics(settings, run_id, {"auc": 0.74})
    tracking.rename_run(settings, run_id, "recmodel-v1")
    tracking.end_run(settings, run_id, failed=False)
    StageRegistry(settings.resolved_tracking_uri, "recmodel").register(1, "file:///store/1", run_id, {}, "")
    experiment_id = tracking.ensure_experiment(settings)
    offline_browser.set_window_size(1900, 1000)  # the table's columns up to Models in sight
    runs_with_version = re.compile(r"recmodel-v1\n(.*\n)*recmodel\s+v1\n")
    with mlflow_ui(settings.resolved_tracking_uri, tmp_path) as base:
        experiment = f"{base}/#/experiments/{experiment_id}"
        offline_browser.get(f"{experiment}?workflowType=machine_learning")  # the README's link
        shown = wait_for_text(offline_browser, runs_with_version)
        screenshot(offline_browser, "mlflow-experiment-training-runs")
        assert "Runs" in shown and "Token Usage" not in shown

        offline_browser.get(experiment)  # a plain link, in a browser that never chose: GenAI
        wait_for_text(offline_browser, "Token Usage")
        for tip in offline_browser.find_elements(By.XPATH, "//button[normalize-space(.)='Got it']"):
            tip.click()  # the GenAI view's first-visit tip covers the page
        offline_browser.find_element(By.XPATH, "//*[normalize-space(text())='Model training']").click()
        wait_for_text(offline_browser, runs_with_version)
        offline_browser.find_element(By.LINK_TEXT, "recmodel-v1").click()  # the run's page
        run_page = wait_for_text(offline_browser, re.compile(r"Registered models\n(.*\n)*recmodel"))
        screenshot(offline_browser, "mlflow-training-run")
        assert "Evaluation runs" not in run_page  # the GenAI view's name for a run's section
        offline_browser.get(experiment)  # the choice is remembered
        wait_for_text(offline_browser, runs_with_version)


def test_the_prefect_ui_shows_the_daily_schedule_with_its_zone(railyard_home, prefect_ui_server, offline_browser):
    """`railyard deploy` against a server on another port than 4200, started with
    PREFECT_SERVER_UI_API_URL as the README says: the UI reaches it and the schedule says its zone
    where Prefect lets it: the description (both UIs), the V1 UI's schedule card (the slug; the
    default V2 UI shows "At 03:00 AM" there)."""
    env = os.environ | {"PREFECT_API_URL": prefect_ui_server}
    subprocess.run([sys.executable, "-m", "cli", "deploy"], env=env, check=True, capture_output=True, timeout=300)
    with urllib.request.urlopen(f"{prefect_ui_server}/deployments/name/retrain/daily", timeout=10) as response:
        daily = json.loads(response.read())
    ui = prefect_ui_server.removesuffix("/api")
    offline_browser.get(f"{ui}/v2/deployments/deployment/{daily['id']}?tab=Description")  # `/` leads to V2
    wait_for_text(offline_browser, "Daily at 03:00 Europe/Berlin (the schedule's zone")
    screenshot(offline_browser, "prefect-v2-daily-deployment-description")
    offline_browser.get(f"{ui}/deployments/deployment/{daily['id']}")  # the V1 UI
    wait_for_text(offline_browser, "daily at 03:00 Europe/Berlin")  # the schedule card
    screenshot(offline_browser, "prefect-daily-deployment-schedule")
    offline_browser.get(f"{ui}/deployments/deployment/{daily['id']}?tab=Description")
    wait_for_text(offline_browser, "Daily at 03:00 Europe/Berlin (the schedule's zone")
