"""A real headless Chromium driven by Selenium, for the UI tests and the UI benchmark (like
runledger.server_process, tooling the test suite and `make bench` share; selenium is a test
dependency, imported only when a browser is started).

The browser is Debian's `chromium` with its `chromedriver` (`chromium-driver`), found on PATH;
`.ci/run` installs them when absent. `unavailable()` says why the browser cannot be used (None
when it can), so the tests skip with one line instead of failing on a machine without it."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any



def _binary(*names: str) -> str | None:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    for path in ("/usr/bin/chromium", "/usr/lib/chromium/chromium"):
        if names[0] == "chromium" and Path(path).exists():
            return path
    return None


def unavailable() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    if _binary("chromium", "chromium-browser", "google-chrome") is None:
        return "no Chromium on this machine (apt-get install chromium chromium-driver; .ci/run does it)"
    if _binary("chromedriver") is None:
        return "no chromedriver on this machine (apt-get install chromium-driver; .ci/run does it)"
    return None


def start_browser(width: int = 1400, height: int = 1000) -> Any:
    """A headless Chromium session (selenium WebDriver); the caller quits it."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = _binary("chromium", "chromium-browser", "google-chrome") or ""
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}", "--disable-extensions", "--no-first-run",
                "--disable-background-networking"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(_binary("chromedriver")), options=options)


def screenshot(driver: Any, folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    # The whole page, not just the window: the body's height decides the window's for the shot.
    height = driver.execute_script(
        "return Math.max(document.documentElement.scrollHeight, document.body.scrollHeight, 800)")
    size = driver.get_window_size()
    driver.set_window_size(size["width"], min(int(height) + 160, 5000))
    time.sleep(0.2)   # the resized window lays out and redraws its charts first
    driver.save_screenshot(str(path))
    driver.set_window_size(size["width"], size["height"])
    return path
