"""What a client can hold without a key or a whole request: nothing for long. Bounded tests on
loopback against `custintel serve`, over raw sockets, each asserting a refusal or a limit (the
latency under attack is measured in bench/attack.py, not here)."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ADMIN_KEY
from tests.fixtures.live import free_port, serve_env, serving, wait_ready

pytestmark = pytest.mark.slow


@contextlib.contextmanager
def service(database_url: str, tmp_path: Path, **settings: str) -> Iterator[int]:
    port = free_port()
    env = serve_env(
        port,
        database_url=database_url,
        run_worker="false",
        bootstrap_admin_key=ADMIN_KEY,
        models_dir=str(tmp_path / "models"),
        **settings,
    )
    with serving(env) as serve:
        wait_ready(serve, port)
        yield port


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    return sock


def send(sock: socket.socket, data: bytes) -> None:
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        sock.sendall(data)


def answer(sock: socket.socket) -> tuple[int | None, bool]:
    """The status of the answer (None if none came) and whether the server then closed."""
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    except TimeoutError:
        return (int(received.split()[1]) if received else None), False
    return (int(received.split()[1]) if received else None), True


@pytest.fixture
def port(database_url: str, tmp_path: Path) -> Iterator[int]:
    with service(database_url, tmp_path, header_timeout_seconds="1", body_timeout_seconds="1") as p:
        yield p


@pytest.mark.parametrize(
    "request_line",
    [b"POST /v1/events", b"PUT /v1/accounts/acme", b"POST /v1/keys", b"POST /v1/events/batch"],
)
def test_an_upload_without_a_key_is_refused_before_its_body_is_read(
    port: int, request_line: bytes
) -> None:
    with connect(port) as sock:
        send(
            sock,
            request_line + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 15000000\r\n\r\n{"a":',
        )
        # The answer comes while 15 MB are still owed, and the connection is not kept for them.
        assert answer(sock) == (401, True)


def test_a_head_over_the_size_limit_is_431_and_closed(port: int) -> None:
    with connect(port) as sock:
        send(sock, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n")
        assert answer(sock) == (431, True)
    with connect(port) as sock:  # a head just under the limit is served
        send(sock, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 30_000 + b"\r\n\r\n")
        sock.settimeout(5)
        assert answer(sock)[0] == 200


def test_too_many_headers_is_431(port: int) -> None:
    headers = b"".join(b"X-H%d: v\r\n" % i for i in range(150))
    with connect(port) as sock:
        send(sock, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
        assert answer(sock) == (431, True)


def test_a_slow_head_is_408_and_closed(port: int) -> None:
    with connect(port) as sock:
        send(sock, b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        time.sleep(0.5)
        send(sock, b"X-Slow: 1\r\n")  # still trickling: the deadline counts from the first byte
        assert answer(sock) == (408, True)


def test_a_connection_that_never_sends_is_closed(port: int) -> None:
    with connect(port) as sock:
        status, closed = answer(sock)  # the socket's own timeout ends a wait for a close
        assert status in (408, None) and closed


def test_a_slow_body_is_408_and_closed(port: int) -> None:
    with connect(port) as sock:
        send(
            sock,
            b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + ADMIN_KEY.encode() + b"\r\n"
            b'Content-Length: 100\r\n\r\n{"type":',
        )
        assert answer(sock) == (408, True)


def test_connections_beyond_the_limit_get_503(database_url: str, tmp_path: Path) -> None:
    with service(database_url, tmp_path, max_connections="4") as port:
        idle = [connect(port) for _ in range(4)]
        try:
            for sock in idle:
                send(sock, b"GET /healthz HTTP/1.1\r\n")  # heads begun, not finished
            time.sleep(0.3)
            with connect(port) as sock:
                send(sock, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                sock.settimeout(5)
                assert answer(sock)[0] == 503
        finally:
            for sock in idle:
                sock.close()
        time.sleep(0.3)
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200


def test_slow_uploads_to_a_hook_leave_the_database_to_every_other_route(
    database_url: str, tmp_path: Path
) -> None:
    # Two connections in the pool and four senders trickling their bodies: the receiver reads
    # a body holding no connection, so the other routes are answered while they trickle.
    with service(database_url, tmp_path, db_pool_size="2", body_timeout_seconds="30") as port:
        base = f"http://127.0.0.1:{port}"
        admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
        source = httpx.post(
            f"{base}/v1/sources",
            json={"kind": "stripe", "name": "billing", "secret": "whsec_slow"},
            headers=admin,
        ).json()
        slow = [connect(port) for _ in range(4)]
        try:
            for sock in slow:
                send(
                    sock,
                    f"POST {source['url']} HTTP/1.1\r\nHost: x\r\n".encode()
                    + b"Content-Type: application/json\r\nStripe-Signature: t=1,v1=00\r\n"
                    b"Content-Length: 1000\r\n\r\n{",
                )
            for _ in range(6):  # a byte each from every sender, then the others ask
                time.sleep(0.3)
                for sock in slow:
                    send(sock, b" ")
            ready = httpx.get(f"{base}/readyz", timeout=4)
            assert ready.status_code == 200, ready.text
            account = httpx.get(f"{base}/v1/accounts/nobody", headers=admin, timeout=4)
            assert account.status_code == 404
            for sock in slow:  # still uploading: nothing was answered yet
                sock.setblocking(False)
                with pytest.raises(BlockingIOError):
                    sock.recv(1)
        finally:
            for sock in slow:
                sock.close()
