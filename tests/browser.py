"""Headless Chromium for the page tests (Debian's chromium + chromium-driver, driven by
selenium), and `tunelab rate` as a real server process.

Without the browser the tests skip, unless TUNELAB_REQUIRE_BROWSER=1 (set by .ci/run, which
installs it): then a missing browser fails them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
# Chromium's own background connections are refused on a closed network; keep it quiet.
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--window-size=1280,1000"]


def require_browser() -> None:
    if Path(CHROMIUM).is_file() and Path(DRIVER).is_file():
        return
    message = (f"no headless Chromium ({CHROMIUM}, {DRIVER}): apt-get install chromium "
               "chromium-driver")
    if os.environ.get("TUNELAB_REQUIRE_BROWSER") == "1":
        pytest.fail(message)
    pytest.skip(message)


def chromium() -> Any:
    """A fresh headless Chromium with its own empty profile; browser console logs kept."""
    require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tempfile.mkdtemp(prefix='tunelab-chromium-')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(60)
    return driver


def console_errors(driver: Any) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


class RateServer:
    """`tunelab rate DIR ARGS --port 0` in its own process; `url` once it listens."""

    def __init__(self, directory: Path, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", "import sys; from tunelab.cli import main; "
                                   "sys.exit(main(sys.argv[1:]))",
             "rate", str(directory), "--port", "0", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        deadline = time.time() + 120
        self.banner: list[str] = []
        while time.time() < deadline:
            line = self.process.stdout.readline()
            if not line:
                raise AssertionError(f"tunelab rate exited: {self.process.stderr.read()}")
            self.banner.append(line)
            found = re.search(r"open (http://[\d.]+:\d+)/", line)
            if found:
                self.url = found.group(1)
                return
        raise AssertionError("tunelab rate did not start in 120 s")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)

    def kill(self) -> None:
        self.process.kill()  # SIGKILL: no cleanup, no flush
        self.process.wait(timeout=30)
