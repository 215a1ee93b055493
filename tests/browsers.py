"""Debian's Chromium driven by Playwright, as the page tests open it: headless, no sandbox (root in
CI), and none of the background connections this machine's closed network refuses."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Browser, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
RENDER_TIMEOUT_MS = 30_000
ASSET_URL = re.compile(r'<(?:script|link)\b[^>]*\b(?:src|href)="([^"]*)"')
"""The ``src``/``href`` of a page's scripts and style sheets."""


@contextmanager
def chromium() -> Iterator[Browser]:
    """A browser for one test; missing Chromium fails (never skips) the test."""
    assert CHROMIUM.exists(), f"no {CHROMIUM}: apt-get install chromium (CI's .ci/run does)"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        try:
            yield browser
        finally:
            browser.close()
