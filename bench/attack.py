"""What a hostile client does to everyone else: /healthz latency, and the server's memory, before
and during an attack of slow and oversized requests without a key, all on loopback.

    .venv/bin/python bench/attack.py [--seconds 20] [--slow 200] [--uploads 100] [--hooks 10]

The attack, for `--seconds`, from this process: `--slow` slowloris connections (a request head
sent a line every second), `--slow` connections trickling a body, `--uploads` unauthenticated
uploads declaring 15 MB, and request heads of 1 MB, each sent again a second after it is refused
or cut off. Meanwhile /healthz is asked once every 50 ms on a connection of its own. Each figure
is printed next to its ceiling. Then `--hooks` senders upload to a known webhook source a byte a
second (as a slow or hostile sender with a valid source URL can), while /readyz and a read of an
account (both need the database) are asked every 200 ms: each must answer within 1 s. Bounded in
count and time; nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.platform import db  # noqa: E402
from bench.ingest import (  # noqa: E402
    ADMIN_KEY,
    create_database,
    scratch_dir,
    start_server,
    verdict,
    wait_ready,
)

CEILING_P99_MS = 50.0  # /healthz under attack
CEILING_RSS_GROWTH_MB = 100.0  # the server's memory, after the attack against before
CEILING_DATABASE_ROUTE_S = 1.0  # /readyz and a read, while slow uploads reach a hook


async def _ask(port: int, path: str) -> tuple[float, bytes]:
    """Seconds to the status line of GET path (with the admin key), and the line."""
    started = time.perf_counter()
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: b\r\nAuthorization: Bearer {ADMIN_KEY}\r\n"
        "Connection: close\r\n\r\n".encode()
    )
    try:
        line = await asyncio.wait_for(reader.readline(), 60)
    finally:
        writer.close()
    return time.perf_counter() - started, line


async def _hook_source(port: int) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = b'{"kind": "stripe", "name": "bench", "secret": "whsec_bench"}'
    writer.write(
        b"POST /v1/sources HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {ADMIN_KEY}\r\nContent-Length: {len(body)}\r\n".encode()
        + b"Connection: close\r\n\r\n"
        + body
    )
    answer = await reader.read()
    writer.close()
    url: str = json.loads(answer.split(b"\r\n\r\n", 1)[1])["url"]
    return url


async def _slow_hook(port: int, url: str, stop: float) -> None:
    """A sender with a known source URL whose upload arrives a byte a second."""
    with contextlib.suppress(OSError, TimeoutError):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            f"POST {url} HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\n".encode()
            + b"Stripe-Signature: t=1,v1=00\r\nContent-Length: 100000\r\n\r\n{"
        )
        while time.monotonic() < stop and not reader.at_eof():
            writer.write(b" ")
            await writer.drain()
            await asyncio.sleep(1)
        writer.close()


async def hook_phase(port: int, senders: int, seconds: float) -> dict[str, list[float]]:
    """Latencies of the database routes while `senders` slow uploads reach a hook."""
    url = await _hook_source(port)
    stop = time.monotonic() + seconds
    uploads = asyncio.gather(*(_slow_hook(port, url, stop) for _ in range(senders)))
    await asyncio.sleep(2)  # every upload under way
    seen: dict[str, list[float]] = {"/readyz": [], "/v1/accounts/nobody": []}
    while time.monotonic() < stop - 1:
        for path, latencies in seen.items():
            waited, _ = await _ask(port, path)
            latencies.append(waited)
        await asyncio.sleep(0.2)
    await uploads
    return seen


async def healthz_latencies(port: int, seconds: float) -> tuple[list[float], int]:
    """Latencies of GET /healthz every 50 ms for `seconds`, and how many failed."""
    latencies, failures = [], 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.perf_counter()
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
            line = await asyncio.wait_for(reader.readline(), 5)
            writer.close()
            if b" 200 " in line:
                latencies.append(time.perf_counter() - started)
            else:
                failures += 1
        except (OSError, TimeoutError):
            failures += 1
        await asyncio.sleep(0.05)
    return latencies, failures


async def _again(port: int, stop: float, attack: str) -> int:
    """Run one attacking connection after another until `stop`; the number of connections."""
    made = 0
    while time.monotonic() < stop:
        made += 1
        with contextlib.suppress(OSError, TimeoutError, asyncio.IncompleteReadError):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                if attack == "slowloris":
                    writer.write(b"GET /healthz HTTP/1.1\r\nHost: b\r\n")
                    while time.monotonic() < stop and not reader.at_eof():
                        writer.write(b"X-A: b\r\n")
                        await writer.drain()
                        await asyncio.sleep(1)
                elif attack == "slow-body":
                    writer.write(
                        b"POST /v1/events HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\n"
                        b"Authorization: Bearer ci_not_a_key\r\nContent-Length: 1000000\r\n\r\n"
                    )
                    while time.monotonic() < stop and not reader.at_eof():
                        writer.write(b"[")
                        await writer.drain()
                        await asyncio.sleep(1)
                elif attack == "upload":
                    writer.write(
                        b"POST /v1/events HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\n"
                        b"Content-Length: 15000000\r\n\r\n"
                    )
                    chunk = b" " * 65536
                    while time.monotonic() < stop and not reader.at_eof():
                        writer.write(chunk)
                        await writer.drain()
                else:  # a request head of 1 MB
                    writer.write(b"GET /healthz HTTP/1.1\r\nX-Big: " + b"a" * 1_000_000)
                    await writer.drain()
                    await asyncio.wait_for(reader.read(), 5)
            finally:
                writer.close()
        # Each attacker holds one connection at a time and comes back a second after it is
        # refused or cut off: the attack is the number of them, not a flood of new requests
        # (which any server pays for per request; the per-address limits are for that).
        await asyncio.sleep(1)
    return made


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--slow", type=int, default=200)
    parser.add_argument("--uploads", type=int, default=100)
    parser.add_argument("--hooks", type=int, default=10)
    args = parser.parse_args()

    external = os.environ.get("CUSTINTEL_DATABASE_URL")
    scratch = scratch_dir()
    server_url = (
        db.plain_url(external) if external else await asyncio.to_thread(db.start_embedded, scratch)
    )
    api_url = await create_database(server_url, "bench_attack")
    port = 19000 + os.getpid() % 1000
    server = start_server(api_url, port, 1)
    try:
        await wait_ready(port)
        process = psutil.Process(server.pid)
        before, _ = await healthz_latencies(port, 5)
        rss_before = process.memory_info().rss / 2**20
        stop = time.monotonic() + args.seconds
        attackers = [
            *(_again(port, stop, "slowloris") for _ in range(args.slow)),
            *(_again(port, stop, "slow-body") for _ in range(args.slow)),
            *(_again(port, stop, "upload") for _ in range(args.uploads)),
            *(_again(port, stop, "big-head") for _ in range(5)),
        ]
        attack = asyncio.gather(*attackers)
        await asyncio.sleep(1)  # let the attack build up
        during, failures = await healthz_latencies(port, args.seconds - 2)
        made = sum(await attack)
        await asyncio.sleep(2)
        rss_after = process.memory_info().rss / 2**20
        open_after = len(
            [
                c
                for c in psutil.net_connections("tcp")
                if c.laddr and c.laddr.port == port and c.status == psutil.CONN_ESTABLISHED
            ]
        )
        hooks = await hook_phase(port, args.hooks, min(args.seconds, 20))
    finally:
        server.terminate()
        server.wait(30)

    def p(values: list[float], q: float) -> float:
        ordered = sorted(values)
        return ordered[max(0, int(len(ordered) * q) - 1)] * 1000 if ordered else float("nan")

    p99 = p(during, 0.99)
    growth = rss_after - rss_before
    print()
    print(
        f"attack: {args.slow} slowloris + {args.slow} slow bodies + {args.uploads} unauthenticated "
        f"15 MB uploads + 5 senders of 1 MB heads for {args.seconds:g} s; {made:,} connections"
    )
    print(
        f"/healthz before : p50 {statistics.median(before) * 1000:6.1f} ms  "
        f"p99 {p(before, 0.99):6.1f} ms  ({len(before)} requests)"
    )
    print(
        f"/healthz during : p50 {statistics.median(during) * 1000:6.1f} ms  p99 {p99:6.1f} ms  "
        f"({len(during)} answered, {failures} failed)  ceiling p99 <= {CEILING_P99_MS:g} ms: "
        f"{verdict(p99 <= CEILING_P99_MS and failures == 0)}"
    )
    print(
        f"server memory   : {rss_before:.0f} MB before, {rss_after:.0f} MB after "
        f"(+{growth:.0f} MB)  ceiling +{CEILING_RSS_GROWTH_MB:g} MB: "
        f"{verdict(growth <= CEILING_RSS_GROWTH_MB)}"
    )
    print(f"server connections still established 2 s after the attack: {open_after}")
    for path, latencies in hooks.items():
        worst = max(latencies, default=float("inf"))
        print(
            f"{path} while {args.hooks} slow uploads reach a hook: worst {worst:.3f} s of "
            f"{len(latencies)}  ceiling <= {CEILING_DATABASE_ROUTE_S:g} s: "
            f"{verdict(worst <= CEILING_DATABASE_ROUTE_S)}"
        )


if __name__ == "__main__":
    asyncio.run(main())
