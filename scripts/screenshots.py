"""Take the console's screenshots for docs/console.md from the running example (`scripts/screenshots.py`).

Starts `python -m examples.console` (the app on the embedded emulator, its tasks settled: successes, a retried
failure, a dead letter), opens each console page in headless Chromium at 1280x800 and saves
`docs/images/console-<page>.png`, then stops the example. Needs Debian's `chromium` and `chromium-driver`
(`scripts/browsers.sh`) and selenium (in the `dev` extra); nothing is downloaded.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

ROOT = Path(__file__).resolve().parents[1]
WIDTH, HEIGHT = 1280, 800
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    f"--window-size={WIDTH},{HEIGHT}",
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_example(port: int) -> tuple[subprocess.Popen[str], str, str]:
    """Run the example until it prints its consoles' URLs; returns the process and both URLs."""
    process = subprocess.Popen(
        [sys.executable, "-m", "examples.console", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    urls: dict[str, str] = {}
    deadline = time.monotonic() + 120
    while len(urls) < 2:
        line = process.stdout.readline()
        if not line or time.monotonic() > deadline:
            process.kill()
            sys.exit(f"the example stopped or took too long before printing its console URLs (got {urls})")
        label, _, url = line.strip().partition(": ")
        if label in ("console", "emulator console"):
            urls[label] = url.rstrip("/")
    return process, urls["console"], urls["emulator console"]


def browser(profile: str) -> WebDriver:
    os.environ["SE_OFFLINE"] = "true"
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"), options=options)
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False},
    )
    return driver


def shoot(driver: WebDriver, url: str, path: Path) -> None:
    driver.get(url)
    WebDriverWait(driver, 30).until(lambda d: d.execute_script("return document.readyState") == "complete")
    path.write_bytes(driver.get_screenshot_as_png())
    print(f"{path.relative_to(ROOT)} <- {url}")


def first_link(driver: WebDriver, url: str) -> str:
    """The first task's page in the task list at `url`."""
    driver.get(url)
    links = driver.find_elements(By.CSS_SELECTOR, "table.tasks tbody tr td:first-child a")
    if not links:
        sys.exit(f"no task listed at {url}")
    return str(links[0].get_attribute("href"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images", help="folder of the PNGs")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    process, app_console, emulator_console = start_example(free_port())
    profile = tempfile.mkdtemp(prefix="console-screenshots-")
    driver = browser(profile)
    try:
        pages = {
            "overview": f"{app_console}/",
            "tasks": f"{app_console}/tasks",
            "task": first_link(driver, f"{app_console}/tasks?endpoint=/tasks/charge"),
            "dead-letters": f"{app_console}/dead-letters",
            "queues": f"{app_console}/queues",
            "emulator": f"{emulator_console}/",
            "emulator-tasks": f"{emulator_console}/tasks",
        }
        for page, url in pages.items():
            shoot(driver, url, args.out / f"console-{page}.png")
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
