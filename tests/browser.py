"""Headless Chromium (Debian's package) driven over the DevTools protocol, for pages that must
render in a real browser: the model report, /docs and /redoc."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
from websockets.sync.client import connect

from tests.live import free_port

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
Evaluate = Callable[[str], Any]


@contextlib.contextmanager
def opened(url: str, profile: Path, *, offline: bool = False) -> Iterator[Evaluate]:
    """Open `url` and, once loaded, yield a function evaluating JavaScript in the page. Offline:
    every host name but localhost and 127.0.0.1 fails to resolve, as on a server with no
    network."""
    assert CHROMIUM, "browser tests need Chromium (Debian: apt-get install chromium)"
    port = free_port()
    flags = ["--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1"]
    browser = subprocess.Popen(
        [
            CHROMIUM,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-default-apps",
            "--disable-sync",
            "--no-first-run",
            *(flags if offline else []),
            f"--remote-debugging-port={port}",
            f"--user-data-dir={profile}",
            url,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        socket_url = None
        while socket_url is None:
            assert time.monotonic() < deadline, "Chromium did not open the page"
            try:
                targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=2).json()
                socket_url = next(
                    (t["webSocketDebuggerUrl"] for t in targets if t["url"] == url), None
                )
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        with connect(socket_url, max_size=None) as ws:
            ids = iter(range(1, 1_000_000))

            def evaluate(expression: str) -> Any:
                n = next(ids)
                params = {"expression": expression, "returnByValue": True}
                ws.send(json.dumps({"id": n, "method": "Runtime.evaluate", "params": params}))
                while True:
                    message = json.loads(ws.recv(timeout=30))
                    if message.get("id") == n:
                        return message["result"]["result"].get("value")

            while evaluate("document.readyState") != "complete":
                assert time.monotonic() < deadline, "the page did not finish loading"
                time.sleep(0.2)
            yield evaluate
    finally:
        browser.terminate()
        browser.wait(30)


def wait_for(evaluate: Evaluate, expression: str, *, within: float = 60, what: str) -> Any:
    """The value of `expression` once truthy; fails saying `what` did not happen."""
    deadline = time.monotonic() + within
    while not (value := evaluate(expression)):
        assert time.monotonic() < deadline, f"{what} within {within} s"
        time.sleep(0.2)
    return value
