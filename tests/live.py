"""A real custintel server on loopback, in its own process, for end-to-end tests."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx

from tests.conftest import ADMIN_KEY


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serve(database_url: str, **settings: str) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "CUSTINTEL_DATABASE_URL": database_url,
        "CUSTINTEL_BOOTSTRAP_ADMIN_KEY": ADMIN_KEY,
        "CUSTINTEL_ACCESS_LOG": "false",
        "CUSTINTEL_RUN_WORKER": "false",  # a bare uvicorn: no job worker beside it
        **{f"CUSTINTEL_{k.upper()}": v for k, v in settings.items()},
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "app.main:create_app",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("custintel did not start")
            time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
