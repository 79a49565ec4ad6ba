"""Chromium for the console's browser tests: Debian's /usr/bin/chromium driven by Playwright (never a
downloaded browser). Skipped locally when either is missing; in CI (the CI variable is set) a missing
browser fails the tests instead, as a missing PostgreSQL does."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "console"
VIEWPORT = {"width": 1360, "height": 900}
# pages answered 4xx on purpose (a wrong token, a refused change) are logged by Chromium as such
EXPECTED_LOAD_ERROR = re.compile(r"^Failed to load resource: the server responded with a status of 4\d\d")


def unavailable(reason: str) -> None:
    """Skips the test, or fails it in CI."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI never skips the browser tests)")
    pytest.skip(reason)


@pytest.fixture
def chromium() -> Path:
    if not CHROMIUM.exists():
        unavailable(f"{CHROMIUM} is missing: apt-get install -y chromium")
    return CHROMIUM


@pytest.fixture
async def browser(chromium: Path) -> AsyncIterator[Any]:
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        unavailable("playwright is not installed: pip install -e '.[test]'")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=str(chromium), args=ARGS)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def page(browser: Any) -> AsyncIterator[Any]:
    """A fresh page whose script errors and refused resources (a CSP violation, say) fail the test."""
    context = await browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(15_000)
    opened = await context.new_page()
    problems: list[str] = []
    opened.on("pageerror", lambda error: problems.append(f"script error: {error}"))
    opened.on("console", lambda message: message.type == "error" and problems.append(message.text))
    try:
        yield opened
    finally:
        await context.close()
    unexpected = [p for p in problems if not EXPECTED_LOAD_ERROR.search(p)]
    assert not unexpected, unexpected


@pytest.fixture
def screenshot() -> Callable[..., Awaitable[None]]:
    """Saves the page (the whole of it, unless told) as docs/console/<name>.png, to look at."""

    async def save(page: Any, name: str, *, full_page: bool = True) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=full_page)

    return save


@pytest.fixture
def log_in() -> Callable[..., Awaitable[None]]:
    """Logs in through the console's form, as a person does."""

    async def submit(page: Any, url: str, token: str, name: str = "") -> None:
        await page.goto(url + "/batches")
        await page.fill("input[name=token]", token)
        await page.fill("input[name=name]", name)
        await page.click("button:has-text('Log in')")
        await page.wait_for_url(url + "/batches")

    return submit
