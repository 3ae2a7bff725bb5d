"""Real headless Chromium for page tests, driven by Playwright's sync API.

The binary is Debian's `chromium` (CI installs it; Playwright's browser download is not used), or the one
named by TLCR_CHROMIUM, launched through `executable_path`. Without one, every test that asks for `browser`
is skipped with the reason, or fails where TLCR_REQUIRE_BROWSER=1 (CI).
"""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
ACTION_TIMEOUT_MS = 30_000


def find_chromium() -> str | None:
    named = os.environ.get("TLCR_CHROMIUM")
    if named:
        return shutil.which(named) or (named if Path(named).is_file() else None)
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


# Module scope: while the sync API runs, its event loop counts as running in this thread, so asyncio.run()
# (the labeling stage of a demo run, pytest-asyncio tests) fails until it is closed; session fixtures start earlier.
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    binary = find_chromium()
    if binary is None:
        named = os.environ.get("TLCR_CHROMIUM")
        reason = (f"TLCR_CHROMIUM={named!r} is not a Chromium executable" if named else
                  "no Chromium binary on PATH (tried " + ", ".join(CHROMIUM_NAMES)
                  + "); install Debian's `chromium` package to run the browser tests")
        if os.environ.get("TLCR_REQUIRE_BROWSER") == "1":  # CI installs it: a missing browser is a failure there
            pytest.fail(reason + " (TLCR_REQUIRE_BROWSER=1)")
        pytest.skip(reason)
    with sync_playwright() as playwright:
        # Playwright's own switches (headless, --no-sandbox, --disable-dev-shm-usage) run it as root in a container
        chromium = playwright.chromium.launch(executable_path=binary)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    tab = browser.new_page(viewport={"width": 1200, "height": 900}, device_scale_factor=1)
    tab.set_default_timeout(ACTION_TIMEOUT_MS)
    yield tab
    tab.close()


def png_pixels(png: bytes) -> np.ndarray:
    """A PNG screenshot decoded to an H×W×C float array in [0, 1]."""
    return np.asarray(matplotlib.image.imread(io.BytesIO(png), format="png"), dtype=np.float64)


def colour_fractions(image: np.ndarray) -> dict[str, float]:
    """Fractions of pixels that are non-white, green-ish (the positive spans) and red-ish (the negative ones)."""
    red, green, blue = image[..., 0], image[..., 1], image[..., 2]  # alpha ignored: screenshots are opaque
    non_white = (red < 0.95) | (green < 0.95) | (blue < 0.95)
    greenish = (green - red > 0.15) & (green - blue > 0.15)
    reddish = (red - green > 0.15) & (red - blue > 0.15)
    return {"non_white": float(non_white.mean()), "green": float(greenish.mean()), "red": float(reddish.mean())}


# Fixtures, because the test modules cannot import conftest helpers under --import-mode=importlib.
@pytest.fixture(scope="session")
def decode_png() -> Callable[[bytes], np.ndarray]:
    """`png_pixels`, for the test modules."""
    return png_pixels


@pytest.fixture(scope="session")
def pixel_stats() -> Callable[[np.ndarray], dict[str, float]]:
    """`colour_fractions`, for the test modules."""
    return colour_fractions
