"""Headless Chromium (Debian's `chromium`, /usr/bin/chromium) driven over the DevTools protocol, for tests that read
web pages as a person sees them: the text a single-page app renders, and screenshots.

The protocol travels over a pair of pipes (`--remote-debugging-pipe`: commands on the browser's fd 3, answers and
events on its fd 4, each message JSON ended by a NUL byte), so no port is opened and no package is needed. One
browser serves every page of a test, and a page counts as loaded when the text a test waits for is there: no fixed
sleep, which a slow machine would outrun.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")


class Chromium:
    """One headless browser with one page (tab) of `width` x `height` CSS pixels; `close` ends its processes."""

    def __init__(self, width: int = 1400, height: int = 1000) -> None:
        self._profile = tempfile.TemporaryDirectory(prefix="score-chromium-")
        to_browser, self._commands = os.pipe()
        self._answers, from_browser = os.pipe()

        def plumb() -> None:  # in the child: the protocol's pipes at fds 3 and 4, where Chromium looks for them
            ours = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_browser, from_browser)]  # out of 3 and 4's way
            os.dup2(ours[0], 3)
            os.dup2(ours[1], 4)

        self.process = subprocess.Popen(
            [
                str(CHROMIUM),
                "--headless",
                "--no-sandbox",  # tests run as root in CI containers, where Chromium's sandbox cannot start
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-pipe",
                f"--user-data-dir={self._profile.name}",
                f"--window-size={width},{height}",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(to_browser, from_browser, 3, 4),
            preexec_fn=plumb,
        )
        os.close(to_browser)
        os.close(from_browser)
        self._next_id = 0
        self._buffer = b""
        target = self._send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self._session = self._send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self._send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
            page=True,
        )

    def open(self, url: str, wait_for: list[str], timeout: float = 60) -> str:
        """Load `url` afresh and wait until its text holds every string of `wait_for`; the page's text."""
        self._send("Page.navigate", {"url": "about:blank"}, page=True)
        self._send("Page.navigate", {"url": url}, page=True)
        return self.wait_for(wait_for, timeout)

    def wait_for(self, wanted: list[str], timeout: float = 60) -> str:
        """The page's text once it holds every string of `wanted`; AssertionError with the text after `timeout` s."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.text()
            if all(w in text for w in wanted) or time.monotonic() > deadline:
                break
            time.sleep(0.25)
        missing = [w for w in wanted if w not in text]
        assert not missing, f"not on the page after {timeout:.0f} s: {missing}\n--- page text:\n{text[:4000]}"
        time.sleep(0.5)  # charts and icons still drawing, for the screenshot
        return self.text()

    def text(self) -> str:
        """What the page shows as text (`innerText`: rendered, without scripts or hidden elements)."""
        result = self._send(
            "Runtime.evaluate",
            {"expression": "document.body ? document.body.innerText : ''", "returnByValue": True},
            page=True,
        )
        return str(result["result"].get("value", ""))

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (None for undefined)."""
        result = self._send("Runtime.evaluate", {"expression": expression, "returnByValue": True}, page=True)
        return result["result"].get("value")

    def screenshot(self, path: Path) -> Path:
        """A PNG of the visible page."""
        data = self._send("Page.captureScreenshot", {"format": "png"}, page=True)["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        """Close the browser (the protocol's own way, then by the process we started) and its profile folder."""
        try:
            self._send("Browser.close", {})
        except (OSError, AssertionError):
            pass
        for pipe in (self._commands, self._answers):
            try:
                os.close(pipe)
            except OSError:
                pass
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._profile.cleanup()

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, method: str, params: dict, page: bool = False, timeout: float = 60) -> dict:
        """One protocol command (to the page's session when `page`), and its result; events are skipped."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if page:
            message["sessionId"] = self._session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._receive(deadline)
            if reply.get("id") == self._next_id:
                assert "error" not in reply, f"{method}: {reply['error']}"
                return reply.get("result", {})

    def _receive(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._answers], [], [], max(0.0, deadline - time.monotonic()))
            assert ready, "Chromium did not answer"
            chunk = os.read(self._answers, 1 << 20)
            assert chunk, f"Chromium exited (code {self.process.poll()})"
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)
