"""The browser the page tests drive."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

#: The browser the page tests drive (never a downloaded one: CI installs Debian's chromium).
CHROMIUM = os.environ.get("HUIFANG_CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="module")
def browser():  # type: ignore[no-untyped-def]
    """Debian's Chromium driven by Playwright, for the browser tests of one module."""
    # CI installs the browser (.ci/run) and sets HUIFANG_REQUIRE_BROWSER=1 so that a missing one fails there;
    # elsewhere the test skips with the reason.
    required = os.environ.get("HUIFANG_REQUIRE_BROWSER") == "1"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if required:
            raise
        pytest.skip("playwright is not installed (pip install -e '.[dev]')")
    if not Path(CHROMIUM).exists():
        if required:
            raise AssertionError(f"{CHROMIUM} is missing (apt-get install chromium fonts-wqy-microhei)")
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium fonts-wqy-microhei)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()
