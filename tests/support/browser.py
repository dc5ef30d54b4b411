"""A real headless Chromium (Debian's chromium + chromium-driver) through Selenium, with a fresh profile.

Skips the calling test when either is missing, or fails it if ISV_TEST_REQUIRE_CHROMIUM=1 (.ci/run).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)


def _binaries() -> tuple[str, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if browser and driver:
        return browser, driver
    reason = "Chromium and chromium-driver are not installed (scripts/ci-setup installs them)"
    if os.environ.get("ISV_TEST_REQUIRE_CHROMIUM") == "1":
        pytest.fail(f"ISV_TEST_REQUIRE_CHROMIUM=1 but {reason}")
    pytest.skip(reason)


@contextlib.contextmanager
def chromium(profile: Path) -> Iterator[Any]:
    """A headless Chromium WebDriver using `profile` as its fresh user-data-dir; quit at the end."""
    browser, driver_path = _binaries()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
