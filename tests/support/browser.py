"""Headless Chromium driven by Selenium, for tests that look at a page as a person does.

Debian's ``chromium`` and ``chromium-driver`` (``make browsers`` installs them where apt-get
can; ``make test`` runs it first). Where the browser cannot start, the tests that need it are
skipped with the reason. The browser reaches this machine only: every other host name fails
to resolve and every other request goes to a dead proxy, so a page that needs a CDN shows it.

``offline_browser`` (a fixture) yields a driver; ``screenshot(driver, name)`` keeps a PNG
under ``test-artifacts/screenshots/`` (the test names it), ``computed(driver, css, prop)`` reads
a computed style, ``wait_for_text`` waits until the page shows a text.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
LOCAL = "127.0.0.1;localhost;[::1]"
WAIT_S = 60  # a React UI's first render on a busy 2-core machine
START_ATTEMPTS = 3


def start_chromium(tmp_dir: Path):
    """A headless Chromium that reaches this machine only; raises when it cannot start."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver_binary = shutil.which("chromium"), shutil.which("chromedriver")
    if browser is None or driver_binary is None:
        raise RuntimeError(
            "chromium or chromedriver is not installed (Debian: apt-get install chromium chromium-driver)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in (
        "--headless=new",
        "--no-sandbox",  # as root, in a container
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
        f"--user-data-dir={tmp_dir / 'chromium-profile'}",
        # No way out: names other than the local ones do not resolve, and whatever is not local
        # goes to a proxy that is not there.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
        "--proxy-server=http://127.0.0.1:9",
        f"--proxy-bypass-list={LOCAL}",
        "--allow-file-access-from-files",
    ):
        options.add_argument(argument)
    # Chromium's singleton socket lives under TMPDIR, whose path must stay short (a socket path
    # has at most 107 bytes): a home's deep scratch folder is refused.
    service = Service(
        executable_path=driver_binary, log_output=str(tmp_dir / "chromedriver.log"), env=os.environ | {"TMPDIR": "/tmp"}
    )
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(WAIT_S)
    return driver


@pytest.fixture
def offline_browser(tmp_path: Path) -> Iterator:
    """A headless Chromium with no network beyond this machine; the test is skipped, saying why,
    where the browser cannot start."""
    driver = _started_chromium(tmp_path)
    try:
        yield driver
    finally:
        driver.quit()


def _started_chromium(tmp_path: Path):
    """A started browser, or the test skipped saying why. A browser that is installed gets a few
    tries: on a loaded machine Chromium now and then exits before its first session."""
    for attempt in range(START_ATTEMPTS):
        folder = tmp_path / f"chromium-{attempt}"
        folder.mkdir(exist_ok=True)
        try:
            return start_chromium(folder)
        except Exception as error:  # noqa: BLE001 - any reason the browser cannot start is a skip
            failure = f"{type(error).__name__}: {str(error)[:300]}"
            if shutil.which("chromium") is None or shutil.which("chromedriver") is None:
                pytest.skip(f"headless Chromium cannot start here ({failure}); `make browsers` installs it")
    log = folder / "chromedriver.log"
    tail = log.read_text(errors="replace")[-1500:] if log.exists() else "(no log)"
    pytest.skip(f"headless Chromium cannot start here ({failure}); chromedriver's log ends:\n{tail}")


def screenshot(driver, name: str) -> Path:
    """The page as shown, kept as a test artifact: test-artifacts/screenshots/<name>.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def computed(driver, css: str, prop: str) -> str:
    """The computed value of a style property of the first element ``css`` selects."""
    return driver.execute_script(
        "return getComputedStyle(document.querySelector(arguments[0])).getPropertyValue(arguments[1]);", css, prop
    )


def wait_for_text(driver, text: str | re.Pattern, timeout_s: float = WAIT_S) -> str:
    """The page's visible text once it contains ``text`` (a string, or a pattern it matches);
    fails naming what it shows instead."""
    deadline = time.monotonic() + timeout_s
    shown = ""
    while time.monotonic() < deadline:
        shown = driver.execute_script("return document.body ? document.body.innerText : '';") or ""
        if (text in shown) if isinstance(text, str) else text.search(shown):
            return shown
        time.sleep(0.5)
    raise AssertionError(f"the page never showed {text!r}; it shows:\n{shown[:2000]}")
