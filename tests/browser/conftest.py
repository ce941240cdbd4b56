"""A real headless Chromium for the console's browser tests, driven by selenium; one browser per session.

In CI (`CI` set) a missing Chromium or chromedriver fails the tests: they must run there. Elsewhere they skip
with the command that installs them. Selenium never downloads a driver (`SE_OFFLINE`): it uses Debian's.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

CHROME_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,800",
)
INSTALL = "scripts/browsers.sh (apt-get install chromium chromium-driver) and pip install selenium"


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false")


def _missing(reason: str) -> None:
    message = f"the browser tests need Chromium, chromedriver and selenium: {reason}; install them with {INSTALL}"
    if _in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def find(name: str, *candidates: str) -> str | None:
    """The first executable among `candidates` and `name` on the PATH."""
    for path in (*candidates, shutil.which(name)):
        if path and os.access(path, os.X_OK):
            return path
    return None


@pytest.fixture(scope="session")
def browser() -> Iterator[WebDriver]:
    """Headless Chromium with a fresh profile, 1280x800, quit at the end of the session."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _missing("selenium is not installed")
    chromium = find("chromium", os.environ.get("CHROMIUM", ""), "/usr/bin/chromium")
    driver_path = find("chromedriver", os.environ.get("CHROMEDRIVER", ""), "/usr/bin/chromedriver")
    if chromium is None or driver_path is None:
        _missing(f"chromium={chromium}, chromedriver={driver_path}")
    assert chromium is not None
    assert driver_path is not None
    os.environ["SE_OFFLINE"] = "true"
    profile = tempfile.mkdtemp(prefix="console-browser-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*CHROME_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
