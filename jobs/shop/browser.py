"""Headless Chromium from Debian's packages, driven by Selenium (tests, bench, screenshots).

The browser and its driver come from ``make browser-deps`` (``chromium``,
``chromium-driver``); Selenium Manager, which would download a driver, is kept offline.
The flags keep a headless browser on this kind of machine from reaching out (no component
updates, sync or background networking) and from needing a sandbox or a GPU.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

FLAGS: tuple[str, ...] = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--no-first-run",
    "--hide-scrollbars",
)


class BrowserMissing(RuntimeError):
    """Chromium or its driver is not installed (``make browser-deps``)."""


def binaries() -> tuple[str, str]:
    """The paths of ``chromium`` and ``chromedriver``, or BrowserMissing."""
    found = shutil.which("chromium"), shutil.which("chromedriver")
    if not all(found):
        raise BrowserMissing("headless Chromium is not installed: run `make browser-deps`")
    return found[0] or "", found[1] or ""


def chromium(width: int = 1280, height: int = 800) -> Any:
    """A headless Chromium whose console messages can be read (:func:`browser_log`)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager download
    browser, driver = binaries()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--window-size={width},{height}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(executable_path=driver))


def browser_log(driver: Any) -> list[dict[str, Any]]:
    """The console messages and failed loads since the last call (level, message)."""
    return list(driver.get_log("browser"))
