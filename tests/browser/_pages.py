"""What the browser tests do on a console page: open it, click its buttons, and wait on what it shows."""

from __future__ import annotations

from collections.abc import Callable

from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from tests._support import TIMEOUT


def open_page(browser: WebDriver, url: str) -> None:
    """Load `url` and mark the window, so that `still_same_page` can prove later updates came without a reload."""
    browser.get(url)
    browser.execute_script("window.consoleTestMark = 'kept';")


def still_same_page(browser: WebDriver) -> bool:
    """The page was not reloaded since `open_page` (live updates swap a region; a reload drops the mark)."""
    return browser.execute_script("return window.consoleTestMark === 'kept';") is True


def main_text(browser: WebDriver) -> str:
    """The text of the live region, retried when a live update replaced it while being read."""
    for _ in range(5):
        try:
            return str(browser.find_element(By.ID, "live").text)
        except StaleElementReferenceException:
            continue
    return str(browser.find_element(By.ID, "live").text)


def wait_until(browser: WebDriver, condition: Callable[[WebDriver], object], what: str) -> None:
    """Wait on a DOM condition (never a sleep); fail naming what was awaited and showing the page's text."""

    def check(driver: WebDriver) -> object:
        try:
            return condition(driver)
        except StaleElementReferenceException:
            return False

    try:
        WebDriverWait(browser, TIMEOUT, poll_frequency=0.05).until(check)
    except Exception as exc:
        page = f"{browser.current_url} shows:\n{main_text(browser)}"
        raise AssertionError(f"timed out waiting for {what}; {page}") from exc


def wait_for_text(browser: WebDriver, text: str) -> None:
    """Wait until the live region shows `text`."""
    wait_until(browser, lambda driver: text in main_text(driver), repr(text))


def click(browser: WebDriver, label: str, *, near: str | None = None) -> None:
    """Click the button labelled `label` (in the table row containing `near`, when given); waits for the next page.

    A live update may replace the button between finding and clicking it; then it is found again. The next page
    is there once the window's mark is gone (a form submission loads a new document).
    """
    if near is None:
        xpath = f"//button[normalize-space()='{label}']"
    else:
        xpath = f"//tr[contains(., '{near}')]//button[normalize-space()='{label}']"
    browser.execute_script("window.consoleTestClick = true;")
    for _ in range(5):
        try:
            browser.find_element(By.XPATH, xpath).click()
            break
        except StaleElementReferenceException:
            continue
    wait_until(
        browser,
        lambda driver: driver.execute_script("return window.consoleTestClick === undefined;"),
        f"the page after clicking {label!r}",
    )
    browser.execute_script("window.consoleTestMark = 'kept';")


def flash(browser: WebDriver) -> str:
    """The flash message the page shows after an action, or an empty string."""
    found = browser.find_elements(By.CSS_SELECTOR, ".flash")
    return str(found[0].text) if found else ""
