"""A headless Chromium driven by Selenium through Debian's ``chromium-driver`` (no browser
download: Selenium Manager is never asked), for the console's browser tests and bench."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def need_browser() -> None:
    """Skip (or fail in CI, where NERQ_REQUIRE_BROWSER is set) without chromium + driver."""
    missing = [n for n, p in (("chromium", CHROMIUM), ("chromium-driver", CHROMEDRIVER)) if not p]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium")
    if missing:
        msg = f"{' and '.join(missing)} not installed (apt-get install -y chromium chromium-driver)"
        if os.environ.get("NERQ_REQUIRE_BROWSER"):
            pytest.fail(f"the browser is required (NERQ_REQUIRE_BROWSER): {msg}")
        pytest.skip(msg)


@contextmanager
def chromium(width: int = 1400, height: int = 1000) -> Iterator[Any]:
    """A headless Chromium WebDriver (console messages logged), quit on exit."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              f"--window-size={width},{height}", "--use-gl=swiftshader",
              "--enable-unsafe-swiftshader"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=opts, service=Service(executable_path=str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()


def open_report(driver: Any, path: Path, *, timeout: float = 60.0) -> None:
    """Load a report file and wait until its script has drawn everything."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(Path(path).resolve().as_uri())
    WebDriverWait(driver, timeout).until(
        lambda d: d.execute_script("return document.body.getAttribute('data-report-ready')")
        == "1")


def console_errors(driver: Any) -> list[str]:
    """Messages the page logged at level SEVERE (errors) since the last call."""
    return [e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
