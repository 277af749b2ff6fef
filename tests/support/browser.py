"""A real browser for tests: Debian's headless Chromium driven by Playwright (no browser download).

    from support import browser  # tests/ is on sys.path

    def test_page(tmp_path):
        with browser.page() as page:
            page.goto(url)
            browser.shot(page, tmp_path / "page.png")

Or the ``chromium_page`` fixture (``from support.browser import chromium_page``; skips when no
Chromium is installed at `CHROMIUM`, e.g. outside CI where ``.ci/run`` installs it).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support import lanes

CHROMIUM = os.environ.get("MLGITOPS_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


def available() -> bool:
    return Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)


def require() -> None:
    """Skip the calling test when there is no Chromium or no Playwright; fail it outside the
    browser lane."""
    lanes.require("browser", "Chromium")
    if not available():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install -y chromium)")
    pytest.importorskip("playwright.sync_api")


@contextlib.contextmanager
def page(*, width: int = 1366, height: int = 900, timeout_ms: float = 30_000) -> Iterator[Any]:
    """A fresh page of a headless Chromium (laptop-sized viewport); closed afterwards."""
    require()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
        )
        try:
            context = chromium.new_context(viewport={"width": width, "height": height})
            tab = context.new_page()
            tab.set_default_timeout(timeout_ms)
            yield tab
            context.close()
        finally:
            chromium.close()


def shot(tab: Any, path: Path, *, full_page: bool = True) -> Path:
    """Save a screenshot of ``tab`` at ``path`` (parents created); the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tab.screenshot(path=str(path), full_page=full_page)
    return path


@pytest.fixture()
def chromium_page() -> Iterator[Any]:
    with page() as tab:
        yield tab
