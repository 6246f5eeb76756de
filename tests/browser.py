"""Headless Chromium driven over its DevTools protocol: open a page, read its DOM as it
updates (--dump-dom reads it once, at a virtual time that websockets do not follow), take a
screenshot. The binary comes from scripts/chromium.sh."""
import base64
import contextlib
import itertools
import json
import subprocess
import tempfile
import time
import urllib.request

from websockets.sync.client import connect

from tests.dashboard_helpers import free_port


class Browser:
    def __init__(self, binary: str, url: str, width: int = 1400, height: int = 900):
        self._profile = tempfile.TemporaryDirectory(prefix="realtime-ai-chromium-")
        port = free_port()
        self._process = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             f"--remote-debugging-port={port}", f"--user-data-dir={self._profile.name}",
             f"--window-size={width},{height}", url],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._ids = itertools.count(1)
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=1) as r:
                    pages = [p for p in json.load(r) if p["type"] == "page"]
                if pages:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or self._process.poll() is not None:
                self.close()
                raise RuntimeError("chromium did not open its DevTools port")
            time.sleep(0.1)
        self._connection = contextlib.ExitStack()
        self._devtools = self._connection.enter_context(
            connect(pages[0]["webSocketDebuggerUrl"], max_size=None))

    def _call(self, method: str, **params) -> dict:
        call_id = next(self._ids)
        self._devtools.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            reply = json.loads(self._devtools.recv(timeout=30))
            if reply.get("id") == call_id:
                if "error" in reply:
                    raise RuntimeError(reply["error"])
                return reply["result"]

    def evaluate(self, expression: str):
        result = self._call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    def wait_for(self, expression: str, seconds: float):
        """The expression's value once truthy; None after `seconds`."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.1)
        return None

    def screenshot(self, path: str) -> None:
        data = self._call("Page.captureScreenshot", format="png",
                          captureBeyondViewport=True)["data"]
        with open(path, "wb") as out:
            out.write(base64.b64decode(data))

    def close(self) -> None:
        if getattr(self, "_connection", None) is not None:
            self._connection.close()
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._profile.cleanup()
