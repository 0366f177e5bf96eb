"""Operations: the CLI, JSON logs with request ids, partitions ahead, settings that refuse."""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx
import psutil
import pytest
from pydantic import ValidationError

from app import cli
from app.platform import logs, partitions
from app.platform.settings import Settings
from tests.conftest import ADMIN_KEY
from tests.fixtures.http import eventually
from tests.fixtures.live import free_port, serve_env, serving, wait_ready


@pytest.mark.slow
def test_keys_create_prints_a_working_key_as_the_last_line(
    database_url: str, tmp_path: Path
) -> None:
    env = {**os.environ, "CUSTINTEL_DATABASE_URL": database_url}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "app.cli",
            "keys",
            "create",
            "--name",
            "crm",
            "--scopes",
            "ingest,read",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    key = done.stdout.strip().splitlines()[-1]
    assert key.startswith("ci_") and len(key) > 40
    assert key not in done.stderr


@pytest.mark.slow
async def test_a_cli_key_authenticates_with_its_scopes(
    database_url: str, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    env = {**os.environ, "CUSTINTEL_DATABASE_URL": database_url}
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "app.cli", "keys", "create", "--name", "reader", "--scopes", "read"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    headers = {"Authorization": f"Bearer {done.stdout.strip().splitlines()[-1]}"}
    assert (await client.get("/v1/accounts", headers=headers)).status_code == 200
    denied = await client.post("/v1/events", headers=headers, json={})
    assert denied.status_code == 403


@pytest.mark.slow
def test_keys_create_refuses_unknown_scopes(database_url: str, tmp_path: Path) -> None:
    env = {**os.environ, "CUSTINTEL_DATABASE_URL": database_url}
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "keys", "create", "--name", "x", "--scopes", "root"],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode != 0 and "scopes" in done.stderr


@pytest.mark.slow
async def test_keys_list_and_revoke_from_the_cli(
    database_url: str, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    env = {**os.environ, "CUSTINTEL_DATABASE_URL": database_url}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "app.cli", "keys", *args],
            env=env,
            capture_output=True,
            text=True,
            cwd=tmp_path,
        )

    secret = run("create", "--name", "crm sync", "--scopes", "ingest").stdout.splitlines()[-1]
    listed = run("list")
    assert listed.returncode == 0, listed.stderr
    [line] = [row for row in listed.stdout.splitlines() if row.endswith("crm sync")]
    key_id, prefix, scopes, _, state, _ = line.split("\t")
    assert (prefix, scopes, state) == (secret[:10] + "…", "ingest", "active")
    assert secret not in listed.stdout
    headers = {"Authorization": f"Bearer {secret}"}
    event = {"type": "login", "occurred_at": datetime.now(UTC).isoformat(), "account_id": "a"}
    assert (await client.post("/v1/events", headers=headers, json=event)).status_code == 202
    revoked = run("revoke", key_id)
    assert revoked.returncode == 0, revoked.stderr
    assert "\trevoked " in revoked.stdout

    async def refused() -> bool:
        return (await client.post("/v1/events", headers=headers, json=event)).status_code == 401

    await eventually(refused)  # the server hears of it at once, from another process
    assert "revoked" in run("list").stdout
    unknown = run("revoke", "00000000-0000-0000-0000-000000000000")
    assert unknown.returncode != 0 and "no key" in unknown.stderr
    assert run("revoke", "not-a-uuid").returncode != 0


def test_help_names_every_command() -> None:
    [sub] = [a for a in cli.parser()._actions if isinstance(a, argparse._SubParsersAction)]
    commands: dict[str, argparse.ArgumentParser] = sub.choices
    text = cli.parser().format_help()
    assert set(commands) == {
        "serve",
        "demo",
        "migrate",
        "worker",
        "train",
        "score",
        "keys",
        "users",
        "secrets",
        "openapi",
    }
    for name in commands:
        assert name in text and name in (cli.__doc__ or "")
    keys_help = commands["keys"].format_help()
    for action in ("create", "list", "revoke"):
        assert action in keys_help


async def test_access_log_is_json_with_the_request_id(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    from app.main import create_app

    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    logs.configure("INFO")
    try:
        app = create_app(settings.model_copy(update={"access_log": True}))
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                response = await client.get("/healthz", headers={"X-Request-ID": "req-42"})
    finally:
        root.handlers[:], root.level = saved
    assert response.headers["x-request-id"] == "req-42"
    lines = [json.loads(x) for x in capsys.readouterr().err.splitlines() if x.startswith("{")]
    [line] = [x for x in lines if x["logger"] == "custintel.access"]
    assert line["request_id"] == "req-42"
    assert line["path"] == "/healthz" and line["status"] == 200 and "duration_ms" in line


async def test_a_request_id_is_made_when_none_is_sent(client: httpx.AsyncClient) -> None:
    first = await client.get("/healthz")
    second = await client.get("/healthz", headers={"X-Request-ID": "bad id with spaces"})
    made = [first.headers["x-request-id"], second.headers["x-request-id"]]
    assert all(len(rid) == 32 and int(rid, 16) >= 0 for rid in made)
    assert made[0] != made[1]


async def test_partitions_are_kept_ahead_of_now(app: object, conn: asyncpg.Connection) -> None:
    month = partitions.month_of(datetime.now(UTC))
    expected = []
    for _ in range(4):
        expected.append(partitions.partition_name(month))
        month = partitions.next_month(month)
    rows = await conn.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'events'::regclass"
    )
    assert set(expected) <= {r[0] for r in rows}


def test_production_refuses_a_weak_bootstrap_key() -> None:
    with pytest.raises(ValidationError, match="at least 32"):
        Settings(environment="production", bootstrap_admin_key="short")
    assert Settings(environment="production", bootstrap_admin_key="k" * 32).bootstrap_admin_key


@pytest.mark.slow
def test_sigterm_stops_serve_and_the_embedded_postgres_it_started(tmp_path: Path) -> None:
    port = free_port()
    env = serve_env(port, data_dir=str(tmp_path / "data"))
    pid_file = tmp_path / "data" / "pgdata" / "postmaster.pid"
    with serving(env) as serve:
        wait_ready(serve, port)
        assert pid_file.exists()  # the embedded Postgres is running
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(30) == 128 + signal.SIGTERM
    deadline = time.monotonic() + 10
    try:
        while pid_file.exists():  # Postgres removes it when it has shut down
            assert time.monotonic() < deadline, "the embedded Postgres was left running"
            time.sleep(0.1)
    finally:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError, ValueError):
            os.kill(int(pid_file.read_text().split()[0]), signal.SIGINT)  # do not leak it


def listening_sockets(port: int) -> int:
    """TCP sockets listening on a port, from the kernel's table (Linux)."""
    rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return sum(
        1
        for row in rows
        if (fields := row.split())[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port
    )


@pytest.mark.slow
def test_serve_spreads_connections_over_its_workers(database_url: str, tmp_path: Path) -> None:
    # uvicorn's workers shared one socket and the first to wake accepted every connection
    # waiting, so an integration's few keep-alive connections often all reached one worker.
    # Each worker now listens on its own socket and the kernel spreads connections over them.
    # A request id starts with its process's prefix: it tells which worker answered. A worker
    # that dies is replaced; one that cannot start (the port taken) stops the service.
    port = free_port()
    env = serve_env(
        port, database_url=database_url, run_worker="false", models_dir=str(tmp_path / "models")
    )

    async def answering(connections: int) -> collections.Counter[str]:
        limits = httpx.Limits(max_connections=connections)
        async with httpx.AsyncClient(limits=limits, timeout=10) as client:
            # Every request opens its own connection: none is free for reuse until they answer.
            responses = await asyncio.gather(
                *(client.get(f"http://127.0.0.1:{port}/readyz") for _ in range(connections))
            )
        return collections.Counter(r.headers["x-request-id"][:16] for r in responses)

    with serving(env, "--workers", "2") as serve:
        deadline = time.monotonic() + 120
        seen: set[str] = set()
        while len(seen) < 2:  # both workers up
            with contextlib.suppress(httpx.TransportError):
                seen |= set(asyncio.run(answering(1)))
            assert serve.poll() is None and time.monotonic() < deadline, "did not start"
            time.sleep(0.1)
        answered = time.monotonic()
        # One listening socket per worker (the shared one counted once), and a burst of
        # connections reaches both (all 16 on one worker: once in 30,000 bursts).
        assert listening_sockets(port) == 2
        assert len(asyncio.run(answering(16))) == 2

        # A worker that dies once started is replaced (a new process, a new prefix).
        workers = [
            child
            for child in psutil.Process(serve.pid).children()
            if any(c.status == psutil.CONN_LISTEN for c in child.net_connections())
        ]
        assert len(workers) == 2
        # Past the startup window of both (they were started before they answered).
        time.sleep(max(0.0, answered + cli.STARTUP_SECONDS + 1 - time.monotonic()))
        workers[0].kill()
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(httpx.TransportError):  # one queued on the dead worker
                answers = asyncio.run(answering(16))
                if set(answers) - seen and len(answers) == 2:
                    break
            assert serve.poll() is None, "serve stopped instead of replacing the worker"
            assert time.monotonic() < deadline, "the worker was not replaced"
            time.sleep(0.2)
        assert serve.poll() is None

        serve.send_signal(signal.SIGTERM)
        assert serve.wait(30) == 128 + signal.SIGTERM
    with pytest.raises(httpx.ConnectError):  # the workers are gone with it
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)


@pytest.mark.slow
def test_serve_stops_when_its_workers_cannot_listen(database_url: str, tmp_path: Path) -> None:
    port = free_port()
    env = serve_env(port, database_url=database_url, run_worker="false")
    with socket.create_server(("127.0.0.1", port)):  # the port is taken
        serve = subprocess.run(
            [sys.executable, "-m", "app.cli", "serve", "--workers", "2"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert serve.returncode == 1  # not restarting workers forever
    assert "could not start" in serve.stderr and "Address already in use" in serve.stderr


@pytest.mark.slow
def test_serve_starts_its_embedded_postgres_again_when_it_dies(tmp_path: Path) -> None:
    port = free_port()
    env = serve_env(port, data_dir=str(tmp_path / "data"), run_worker="false")
    pid_file = tmp_path / "data" / "pgdata" / "postmaster.pid"
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    env["CUSTINTEL_BOOTSTRAP_ADMIN_KEY"] = ADMIN_KEY

    def ready() -> bool:
        with contextlib.suppress(httpx.TransportError):
            return httpx.get(f"{base}/readyz", timeout=2).is_success
        return False

    with serving(env) as serve:
        deadline = time.monotonic() + 120
        while not ready():
            assert serve.poll() is None and time.monotonic() < deadline, "did not start"
            time.sleep(0.2)
        first = int(pid_file.read_text().split()[0])
        os.kill(first, signal.SIGKILL)  # the database crashes
        deadline = time.monotonic() + 120
        while not (pid_file.exists() and int(pid_file.read_text().split()[0]) != first):
            assert serve.poll() is None and time.monotonic() < deadline, "not started again"
            time.sleep(0.2)
        while not ready():
            assert time.monotonic() < deadline, "never ready again"
            time.sleep(0.2)
        stored = httpx.put(f"{base}/v1/accounts/a", json={"name": "x"}, headers=headers, timeout=10)
        assert stored.status_code == 200, stored.text
        serve.send_signal(signal.SIGTERM)
        serve.wait(30)
    with contextlib.suppress(FileNotFoundError, ProcessLookupError, ValueError):
        os.kill(int(pid_file.read_text().split()[0]), signal.SIGINT)  # do not leak it


def test_models_are_kept_inside_the_data_dir_unless_placed_elsewhere(tmp_path: Path) -> None:
    assert Settings(data_dir=tmp_path).models_dir == tmp_path / "models_store"
    assert Settings(data_dir=tmp_path, models_dir=tmp_path / "m").models_dir == tmp_path / "m"
