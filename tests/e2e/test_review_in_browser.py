"""The review as a reviewer sees it: a real `railyard run` waits for its review on a real Prefect
server with its UI, and a headless Chromium with no network beyond this machine opens the run's
Resume form through Railyard's authenticating proxy, signed in as erin (an answer that does not
pass the proxy is refused: docs/release.md). Screenshots: test-artifacts/screenshots/review-*.png."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.select import Select

from railyard import identity
from tests.support.browser import screenshot, wait_for_text
from tests.support.proxy import running_proxy
from tests.support.release_world import MODEL, World, kill

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


@pytest.fixture
def world(tmp_path, prefect_ui_server):
    world = World(tmp_path / "world", prefect_ui_server)
    yield world
    world.stop_services()


@pytest.fixture
def world_proxy(world):
    """The proxy in front of the world's Prefect UI, for the world's users."""
    with running_proxy(world.home, world.api_url.removesuffix("/api")) as url:
        yield url


def _field(driver, label: str, tag: str):
    """The input of the Resume form's field whose label starts with ``label``."""
    field = "contains(concat(' ', @class, ' '), ' schema-form-property ')"  # not the list around them
    label_starts = f".//span[starts-with(normalize-space(.), '{label}')]"
    return driver.find_element(By.XPATH, f"//div[{field}][{label_starts}]//{tag}")


def _click_button(driver, text: str) -> None:
    driver.find_element(By.XPATH, f"//button[normalize-space(.)='{text}']").click()


def _form_text(driver) -> str:
    """What the Resume dialog shows (not the run's page behind it)."""
    return driver.find_element(By.CSS_SELECTOR, ".p-modal").text


def test_the_resume_form_shows_the_figures_and_refuses_a_rejection_without_a_comment_in_words(
    world, offline_browser, request
):
    run = world.start_run(1)
    # A failed check leaves the run paused for its whole review window: it goes with the test.
    request.addfinalizer(lambda: run.poll() is None and kill(run))
    flow_run = world.wait_until_waiting(1, run)
    mlflow = world.mlflow()
    metrics = mlflow.get_run(mlflow.get_model_version(MODEL, "1").run_id).data.metrics
    deadline = json.loads(world.tags(1)["railyard.release_run"])["deadline"]

    identity.add_user(world.home, "erin", "erin-long-passphrase")
    proxy = request.getfixturevalue("world_proxy")
    browser = offline_browser
    browser.get(proxy.replace("http://", "http://erin:erin-long-passphrase@") + f"/runs/flow-run/{flow_run['id']}")
    wait_for_text(browser, "Resume")
    _click_button(browser, "Resume")
    wait_for_text(browser, "Comment: required to reject")
    screenshot(browser, "review-resume-form")
    form = _form_text(browser)
    # The figures MLflow holds for the version, as the reviewer reads them in the form.
    assert re.search(rf"model \(fresh features: served\)\s+{metrics['auc']:.4f}\s", form), form
    assert re.search(rf"popularity baseline \(movie rate\)\s+{metrics['baseline_auc']:.4f}\s", form), form
    assert re.search(rf"fresh baseline \(user \+ movie rates\)\s+{metrics['fresh_baseline_auc']:.4f}\s", form), form
    deadline_shown = datetime.fromtimestamp(deadline, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    assert f"decide by {deadline_shown}" in form, form
    assert not re.search(r"within \d+ s", form), form  # a time, not a duration

    # A rejection without a comment: the server refuses it, and the reviewer reads why.
    Select(_field(browser, "Decision", "select")).select_by_value("reject")
    _field(browser, "Reviewer", "textarea").send_keys("erin")
    _click_button(browser, "Submit")
    refusal = wait_for_text(browser, "Validation failed for field 'comment'", timeout_s=20)  # a toast, for seconds
    screenshot(browser, "review-rejection-without-comment")
    assert "Failure reason: '' should be non-empty" in refusal, refusal
    assert "does not match" not in refusal  # the regex the check uses is not what the reviewer reads
    assert world.flow_run(flow_run["id"])["state"]["type"] == "PAUSED"

    _field(browser, "Comment", "textarea").send_keys("the lift over the fresh baseline is too small")
    _click_button(browser, "Submit")
    world.wait_for(
        lambda: world.flow_run(flow_run["id"])["state"]["type"] != "PAUSED", "the form's answer", timeout_s=60
    )
    summary = world.finish(run)
    screenshot(browser, "review-rejected")
    assert (summary["model_version"], summary["stage"]) == (1, "rejected")
    assert (summary["decided_by"], summary["reason"]) == ("erin", "the lift over the fresh baseline is too small")
    assert world.stage(1) == "rejected"
    assert world.flow_run(flow_run["id"])["state"]["name"] == "Rejected"
