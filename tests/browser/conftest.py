"""Real headless Chromium for page tests, driven over the DevTools protocol (CDP) with `websockets`.

The binary is Debian's `chromium` (CI installs it; Playwright's browser download is not reachable here), or
the one named by TLCR_CHROMIUM. Without one, every test that asks for `browser` is skipped with the reason,
or fails where TLCR_REQUIRE_BROWSER=1 (CI).
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import matplotlib.image
import numpy as np
import pytest
from websockets.sync.client import ClientConnection, connect

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# Flags seen to work in containers as root, with no GPU and no network; each run gets a fresh profile.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio")
START_TIMEOUT_S = 60.0
COMMAND_TIMEOUT_S = 30.0


def find_chromium() -> str | None:
    named = os.environ.get("TLCR_CHROMIUM")
    if named:
        return shutil.which(named) or (named if Path(named).is_file() else None)
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


class BrowserError(RuntimeError):
    """Chromium did not start, a CDP command failed, or a page condition was not met in time."""


class Page:
    """One tab, over its own CDP websocket: navigate, evaluate JavaScript, take screenshots."""

    def __init__(self, target_id: str, websocket_url: str) -> None:
        self.target_id = target_id
        # screenshots arrive as one base64 message of a few MB: no frame size limit
        self.ws: ClientConnection = connect(websocket_url, max_size=None, open_timeout=COMMAND_TIMEOUT_S)
        self.next_id = 0
        self.events: list[dict[str, Any]] = []
        self.send("Page.enable")
        self.send("Runtime.enable")

    def close(self) -> None:
        self.ws.close()

    def _receive(self, deadline: float) -> dict[str, Any]:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        return json.loads(self.ws.recv(timeout=remaining))

    def send(self, method: str, timeout: float = COMMAND_TIMEOUT_S, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        command_id = self.next_id
        self.ws.send(json.dumps({"id": command_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            try:
                message = self._receive(deadline)
            except TimeoutError:
                raise BrowserError(f"no answer to CDP {method} within {timeout:g} s") from None
            if message.get("id") == command_id:
                if "error" in message:
                    raise BrowserError(f"CDP {method} failed: {message['error']}")
                return dict(message.get("result", {}))
            if "method" in message:
                self.events.append(message)

    def wait_event(self, method: str, timeout: float = COMMAND_TIMEOUT_S) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for i, event in enumerate(self.events):
                if event["method"] == method:
                    return dict(self.events.pop(i).get("params", {}))
            try:
                message = self._receive(deadline)
            except TimeoutError:
                raise BrowserError(f"no {method} event within {timeout:g} s") from None
            if "method" in message:
                self.events.append(message)

    def navigate(self, url: str, width: int = 1200, height: int = 900) -> None:
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
        self.events.clear()
        result = self.send("Page.navigate", url=url)
        if result.get("errorText"):
            raise BrowserError(f"cannot open {url}: {result['errorText']}")
        self.wait_event("Page.loadEventFired")

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression (promises awaited), returned by value (JSON)."""
        result = self.send("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise BrowserError(f"JavaScript error in {expression[:80]!r}: {text}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = COMMAND_TIMEOUT_S, what: str = "") -> Any:
        """Poll a JavaScript expression until it is truthy; its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() >= deadline:
                raise BrowserError(f"timed out after {timeout:g} s waiting for {what or expression}")
            time.sleep(0.1)

    def screenshot(self, clip: dict[str, float] | None = None) -> np.ndarray:
        """PNG screenshot (viewport, or a page-coordinate clip) decoded to an H×W×C float array in [0, 1]."""
        params: dict[str, Any] = {"format": "png"}
        if clip is not None:
            params["clip"] = {**clip, "scale": 1}
            params["captureBeyondViewport"] = True
        data = base64.b64decode(self.send("Page.captureScreenshot", **params)["data"])
        return np.asarray(matplotlib.image.imread(io.BytesIO(data), format="png"), dtype=np.float64)

    def element_clip(self, selector: str) -> dict[str, float]:
        """Page-coordinate box of the first element matching `selector`."""
        box = self.evaluate(f"""(() => {{
            const el = document.querySelector({json.dumps(selector)});
            if (!el) return null;
            const r = el.getBoundingClientRect();
            return {{x: r.left + window.scrollX, y: r.top + window.scrollY, width: r.width, height: r.height}};
        }})()""")
        if not box or box["width"] < 1 or box["height"] < 1:
            raise BrowserError(f"no visible element matches {selector!r}")
        return {k: float(v) for k, v in box.items()}


class Chromium:
    """A headless Chromium process with remote debugging on a port it picks itself."""

    def __init__(self, binary: str, profile_dir: Path, log_path: Path) -> None:
        self.binary = binary
        self.log_path = log_path
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile_dir}", "--remote-debugging-port=0",
                 "--remote-debugging-address=127.0.0.1", "about:blank"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            self.port = self._wait_for_port(profile_dir / "DevToolsActivePort")
        except BaseException:
            self.stop()
            raise
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=COMMAND_TIMEOUT_S)

    def _wait_for_port(self, port_file: Path) -> int:
        # Chromium writes the chosen port into its profile once the DevTools server listens
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BrowserError(f"{self.binary} exited with code {self.process.returncode}:\n{self.log_tail()}")
            try:
                first_line = port_file.read_text().splitlines()[0]
                return int(first_line)
            except (OSError, IndexError, ValueError):
                time.sleep(0.1)
        raise BrowserError(f"{self.binary} opened no DevTools port within {START_TIMEOUT_S:g} s:\n{self.log_tail()}")

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def new_page(self) -> Page:
        response = self.http.put("/json/new?about:blank")
        response.raise_for_status()
        target = response.json()
        return Page(target["id"], target["webSocketDebuggerUrl"])

    def close_page(self, page: Page) -> None:
        page.close()
        self.http.get(f"/json/close/{page.target_id}")

    def stop(self) -> None:
        if hasattr(self, "http"):
            self.http.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture(scope="session")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chromium]:
    binary = find_chromium()
    if binary is None:
        named = os.environ.get("TLCR_CHROMIUM")
        reason = (f"TLCR_CHROMIUM={named!r} is not a Chromium executable" if named else
                  "no Chromium binary on PATH (tried " + ", ".join(CHROMIUM_NAMES)
                  + "); install Debian's `chromium` package to run the browser tests")
        if os.environ.get("TLCR_REQUIRE_BROWSER") == "1":  # CI installs it: a missing browser is a failure there
            pytest.fail(reason + " (TLCR_REQUIRE_BROWSER=1)")
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("chromium")
    chromium = Chromium(binary, root / "profile", root / "chromium.log")
    yield chromium
    chromium.stop()


@pytest.fixture
def page(browser: Chromium) -> Iterator[Page]:
    tab = browser.new_page()
    yield tab
    browser.close_page(tab)


def colour_fractions(image: np.ndarray) -> dict[str, float]:
    """Fractions of pixels that are non-white, green-ish (the positive spans) and red-ish (the negative ones)."""
    red, green, blue = image[..., 0], image[..., 1], image[..., 2]  # alpha ignored: screenshots are opaque
    non_white = (red < 0.95) | (green < 0.95) | (blue < 0.95)
    greenish = (green - red > 0.15) & (green - blue > 0.15)
    reddish = (red - green > 0.15) & (red - blue > 0.15)
    return {"non_white": float(non_white.mean()), "green": float(greenish.mean()), "red": float(reddish.mean())}


@pytest.fixture(scope="session")
def pixel_stats() -> Any:
    """`colour_fractions`, for the test modules (conftest helpers are not importable under importlib mode)."""
    return colour_fractions
