"""The `custintel` command: serve, demo, migrate, worker, train, score, keys, users, secrets,
openapi."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import asyncpg

from app.governance import audit, auth, vault
from app.platform import db, errors, logs, migrate
from app.platform.jsonbody import JSONObject
from app.platform.settings import Settings, get_settings
from app.schemas import models as schemas
from app.schemas.admin import ApiKeyInfo

T = TypeVar("T")

OPENAPI_PATH = Path(__file__).resolve().parent.parent / "openapi" / "openapi.json"


def _migrate(settings: Settings, *, wait_seconds: float = 60) -> str:
    """Apply pending migrations, waiting for the database to come up if it is not yet; then
    make sure every stored secret is sealed and decrypts (app.governance.vault.prepare), or stop."""
    url = db.database_url(settings)
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            migrate.upgrade(url)
            _check_secrets(settings, url)
            return url
        except Exception as exc:
            if not db.is_unreachable(exc) or time.monotonic() > deadline:
                raise
            print("database not reachable yet; retrying", file=sys.stderr)
            time.sleep(2)


def _check_secrets(settings: Settings, url: str) -> None:
    try:
        _with_connection(settings, url, lambda conn: vault.prepare(conn, settings))
    except vault.Unreadable as unreadable:
        print(f"custintel cannot start: {unreadable}", file=sys.stderr)
        sys.exit(EXIT_SECRETS)


EXIT_SECRETS = 78  # EX_CONFIG: the configuration (the key) is wrong


def cmd_secrets_rotate(args: argparse.Namespace) -> None:
    """Seal every stored secret again under a new key (made here unless given). With the key
    file (no CUSTINTEL_SECRET_KEY), the new key replaces it; with CUSTINTEL_SECRET_KEY, the new
    key is printed: put it first in CUSTINTEL_SECRET_KEY (`new,old` while processes restart)."""
    from cryptography.fernet import Fernet

    settings = get_settings()
    url = _migrate(settings)
    new_key = (args.new_key or Fernet.generate_key().decode()).strip().encode()
    Fernet(new_key)  # refuses a malformed key before anything is changed
    data_dir = Path(settings.data_dir).resolve()
    following = data_dir / vault.NEXT_KEY_FILE
    if settings.secret_key is None:
        # Written before the secrets change: a rotation cut short still finds its key.
        fd = os.open(following, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(new_key)

    async def reseal(conn: asyncpg.Connection) -> int:
        done = await vault.rotate(conn, settings, new_key)
        await audit.record(conn, actor="cli", action="secrets.rotated", details={"count": done})
        return done

    done = _with_connection(settings, url, reseal)
    if settings.secret_key is None:
        os.replace(following, data_dir / vault.KEY_FILE)
        print(f"{done} secrets sealed under the new key in {data_dir / vault.KEY_FILE}")
    else:
        old = settings.secret_key.get_secret_value()
        print(f"{done} secrets sealed under the new key. Set, on every process:")
        print(f"CUSTINTEL_SECRET_KEY={new_key.decode()},{old}")
        print("and, once every process runs with it, drop the old key from the list.")


def cmd_serve(args: argparse.Namespace) -> None:
    import uvicorn

    settings = get_settings()
    embedded = not settings.database_url
    _migrate(settings)
    watching = db.supervise_embedded(settings.data_dir) if embedded else None
    worker = JobWorker() if settings.run_worker else None
    try:
        _serve(args, settings, uvicorn)
    finally:
        if watching is not None:
            watching.set()
        if worker is not None:
            worker.stop()


class JobWorker:
    """The one job worker beside `serve`, supervised: started again whenever it ends (after a
    pause that grows while it keeps ending soon after its start, so a worker that cannot start
    does not spin), stopped with the service. A fresh interpreter each time (spawned, never
    forked, since the API process loads LightGBM), sharing the database through the
    environment."""

    def __init__(self) -> None:
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._thread = threading.Thread(target=self._supervise, name="job-worker", daemon=True)
        self._thread.start()

    def _supervise(self) -> None:
        log = logging.getLogger("custintel.serve")
        env = {**os.environ, "CUSTINTEL_WORKER_PARENT": str(os.getpid())}
        pause = 1.0
        while True:
            with self._lock:
                if self._stopping.is_set():
                    return
                started = time.monotonic()
                process = subprocess.Popen([sys.executable, "-m", "app.cli", "worker"], env=env)
                self._process = process
            code = process.wait()  # also reaps it: no zombie
            if self._stopping.is_set():
                return
            if time.monotonic() - started > 60:
                pause = 1.0
            log.error(
                "job worker %s ended (exit code %s); starting another in %g s",
                process.pid,
                code,
                pause,
            )
            self._stopping.wait(pause)
            pause = min(pause * 2, 60.0)

    def stop(self) -> None:
        with self._lock:
            self._stopping.set()
            process = self._process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._thread.join(5)


def _serve(args: argparse.Namespace, settings: Settings, uvicorn: Any) -> None:
    from app.platform import server

    options: dict[str, Any] = {
        "factory": True,
        "host": args.host or settings.host,
        "port": args.port or settings.port,
        "workers": args.workers or settings.workers,
        **server.uvicorn_options(settings),
    }
    if options["workers"] > 1 and sys.platform == "linux":
        _serve_workers(uvicorn.Config("app.main:create_app", **options), settings.log_level)
    else:
        uvicorn.run("app.main:create_app", **options)


# How soon a worker may end after it started before it counts as unable to start, rather than as
# one to replace: a worker that cannot bind or import would otherwise be restarted forever.
STARTUP_SECONDS = 10.0


def _serve_workers(config: Any, log_level: str) -> None:
    """Several API processes, each with its own listening socket in the port's SO_REUSEPORT
    group, so that the kernel spreads new connections over them.

    uvicorn's own workers share one socket, and the worker that wakes first accepts every
    connection waiting: the few long-lived keep-alive connections of an integration often all
    landed on one worker, which then had one core while the others idled. A worker that ends on
    its own is replaced; one that ends during startup stops the service (its log says why).
    """
    import multiprocessing.connection

    if config.port == 0:
        raise SystemExit("Several workers need a fixed port: each binds it on its own.")
    spawn = multiprocessing.get_context("spawn")
    log = logging.getLogger("custintel.serve")

    def start() -> tuple[Any, float]:
        process = spawn.Process(target=_serve_worker, args=(config, log_level))
        process.start()
        return process, time.monotonic()

    workers = [start() for _ in range(config.workers)]
    log.info(
        "serving on http://%s:%d with %d worker processes", config.host, config.port, len(workers)
    )
    try:
        while True:
            multiprocessing.connection.wait([process.sentinel for process, _ in workers])
            for n, (process, started) in enumerate(workers):
                if process.is_alive():
                    continue
                if time.monotonic() - started < STARTUP_SECONDS:
                    raise SystemExit(
                        f"An API worker could not start (exit code {process.exitcode})."
                    )
                log.error(
                    "API worker %s ended (exit code %s); starting another",
                    process.pid,
                    process.exitcode,
                )
                workers[n] = start()
    except KeyboardInterrupt:
        pass  # Ctrl-C reached the workers too: they are shutting down
    finally:
        for process, _ in workers:
            if process.is_alive():
                process.terminate()  # SIGTERM: uvicorn finishes the requests under way
        for process, _ in workers:
            process.join(30)
            if process.is_alive():
                process.kill()
                process.join()


def _serve_worker(config: Any, log_level: str) -> None:
    """One API process of `_serve_workers` (a fresh interpreter)."""
    import socket

    import uvicorn
    from uvicorn.config import STARTUP_FAILURE

    logs.configure(log_level)
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP.
    listener = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        listener.bind((config.host, config.port))
    except OSError as exc:
        logging.getLogger("custintel.serve").error(
            "cannot listen on %s:%d: %s", config.host, config.port, exc.strerror
        )
        sys.exit(STARTUP_FAILURE)
    uvicorn.Server(config).run(sockets=[listener])


def cmd_worker(_: argparse.Namespace) -> None:
    from app.activation import deliveries, schedules
    from app.platform import jobs
    from app.voc import enrich

    settings = get_settings()
    url = db.database_url(settings)
    _check_secrets(settings, url)  # a worker signs deliveries: it needs the key too

    parent = int(os.environ.get("CUSTINTEL_WORKER_PARENT", "0"))

    async def orphaned() -> None:
        # A worker started by `custintel serve` ends with it, however the server was stopped
        # (uvicorn re-raises SIGTERM after its shutdown, so the server's own cleanup may not run).
        while os.getppid() == parent:  # noqa: ASYNC110  (no event exists for a parent dying)
            await asyncio.sleep(1)

    async def run() -> None:
        pool = await db.create_pool(url, settings)
        tasks = {
            asyncio.create_task(
                jobs.work_in_lanes(
                    pool,
                    schedules.handlers(settings),
                    short=schedules.SHORT_JOBS,
                    stale=settings.job_stale_seconds,
                    limit=settings.job_timeout_seconds,
                )
            ),
            asyncio.create_task(jobs.beat_worker(pool, every=settings.job_stale_seconds / 6)),
            asyncio.create_task(schedules.run(pool, settings)),
            asyncio.create_task(deliveries.run(pool, settings)),
            asyncio.create_task(enrich.run(pool, settings)),
        }
        if parent:
            tasks.add(asyncio.create_task(orphaned()))
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await pool.close()

    # A stopped worker ends within WORKER_GRACE_SECONDS: work in a thread (a themes refit, a
    # reader learnt from the comments) cannot be cancelled, and Python's exit waits for it (under
    # load, past the 30 s a test or `docker stop` allows). A job it held is retried elsewhere.
    signal.signal(signal.SIGTERM, _exit_within_grace)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


WORKER_GRACE_SECONDS = 15.0


def _exit_within_grace(signum: int, frame: object) -> None:
    timer = threading.Timer(WORKER_GRACE_SECONDS, os._exit, args=(128 + signum,))
    timer.daemon = True
    timer.start()
    _exit_on_sigterm(signum, frame)


def cmd_train(args: argparse.Namespace) -> None:
    """Train in this process (off any request path) and show progress on stderr."""
    from app.ml import pipeline

    settings = get_settings()
    url = _migrate(settings)
    params: JSONObject = {
        "target": args.target,
        "horizon_days": args.horizon_days,
        "snapshot_every_days": args.snapshot_every_days,
    }
    if args.as_of:
        params["as_of"] = args.as_of
    if args.max_features:
        params["max_features"] = args.max_features
    try:
        schemas.TrainRequest.model_validate_json(json.dumps(params))
    except ValueError as exc:
        sys.exit(f"custintel train: {exc}")

    result = _run_here(
        "train", params, pipeline.handler(settings), settings, url, f"training {args.target}"
    )
    print(f"model {result['model_id']} ({result['status']})")


def _run_here(
    kind: str,
    params: JSONObject,
    handler: Any,
    settings: Settings,
    url: str,
    label: str,
) -> JSONObject:
    """Run a job in the foreground with its progress on stderr (a bar redrawn in place on a
    terminal, whole lines elsewhere); exit with its error."""
    from app.platform import jobs

    shown = jobs.Shown(sys.stderr, label)

    async def progress(report: jobs.Report) -> None:
        shown.show(report)

    async def run() -> JSONObject:
        pool = await db.create_pool(url, settings)
        try:
            result = await jobs.run_here(
                pool,
                kind=kind,
                params=params,
                handler=handler,
                progress=progress,
                limit=settings.job_timeout_seconds,
            )
            shown.show(jobs.Report(1.0))
            return result
        finally:
            await pool.close()

    try:
        result = asyncio.run(run())
    except errors.CustintelError as exc:
        sys.exit(f"\ncustintel {kind}: {exc.detail}")
    except errors.Stopped as exc:
        sys.exit(f"\ncustintel {kind}: {exc}")
    shown.end()
    return result


def cmd_score(args: argparse.Namespace) -> None:
    """Score every account now with each active model and store the scores."""
    from app.ml import batch

    if not args.all:
        sys.exit("custintel score: say --all (scores of one account: GET /v1/accounts/{id}/scores)")
    settings = get_settings()
    url = _migrate(settings)
    params: JSONObject = {"targets": args.target or None, "top": args.top}
    if args.as_of:
        params["as_of"] = args.as_of
    try:
        schemas.RescoreRequest.model_validate_json(json.dumps(params))
    except ValueError as exc:
        sys.exit(f"custintel score: {exc}")
    result = _run_here("score", params, batch.handler(settings), settings, url, "scoring")
    for target, n in result["scores"].items():
        print(f"{target}: {n} accounts scored with model {result['models'][target]}")


def cmd_migrate(_: argparse.Namespace) -> None:
    _migrate(get_settings())
    print(f"database at revision {migrate.head_revision()}")


def cmd_keys_create(args: argparse.Namespace) -> None:
    given = [s.strip() for s in args.scopes.split(",") if s.strip()]
    scopes = [s for s in auth.SCOPES if s in given]
    if set(given) - set(scopes) or not scopes:
        sys.exit(f"--scopes takes a comma-separated list of {', '.join(auth.SCOPES)}")
    settings = get_settings()
    secret = _create_key(settings, _migrate(settings), name=args.name, scopes=scopes)
    print(
        f"created key {args.name!r} with scopes {','.join(sorted(set(scopes)))}; it is shown once:"
    )
    print(secret)


def cmd_users_create(args: argparse.Namespace) -> None:
    password = sys.stdin.readline().rstrip("\n") if args.password_stdin else None
    settings = get_settings()
    made = _create_user(
        settings,
        _migrate(settings),
        email=args.email,
        name=args.name or args.email,
        role=args.role,
        team=args.team,
        password=password,
    )
    print(f"created {args.role} {args.email!r} for the console (/app/)")
    if password is None:
        print("their password, shown once:")
        print(made)


def _create_user(
    settings: Settings,
    url: str,
    *,
    email: str,
    name: str,
    role: str,
    team: str | None,
    password: str | None,
) -> str:
    """Make a console user; the password given, or a new one, which it returns."""
    from app.web import users

    chosen = password or users.new_password()

    async def create(conn: asyncpg.Connection) -> str:
        await users.create(
            conn,
            email=email,
            name=name,
            role=users.role_of(role),
            team=team,
            password=chosen,
            actor="cli",
        )
        return chosen

    try:
        return _with_connection(settings, url, create)
    except errors.CustintelError as exc:
        sys.exit(f"custintel users create: {exc.detail}")


def _demo_people(settings: Settings, url: str) -> list[tuple[str, str, str]]:
    """A lead who sees every account and one of the simulated CSMs, each with a new password
    (set again when the demo runs again on the same data)."""
    from app.web import users

    wanted: list[tuple[users.Role, str]] = [
        ("lead", "lead@vendor.example"),
        ("csm", "csm1@vendor.example"),
    ]
    made: list[tuple[str, str, str]] = [
        (role, email, users.new_password()) for role, email in wanted
    ]

    async def create(conn: asyncpg.Connection) -> None:
        for role, email, password in made:
            await users.ensure(conn, email=email, role=users.role_of(role), password=password)

    _with_connection(settings, url, create)
    return made


def _create_key(settings: Settings, url: str, *, name: str, scopes: list[auth.Scope]) -> str:
    async def create(conn: asyncpg.Connection) -> str:
        _, secret = await auth.create_key(conn, name=name, scopes=scopes, actor="cli")
        return secret

    return _with_connection(settings, url, create)


def _with_connection(
    settings: Settings, url: str, work: Callable[[asyncpg.Connection], Awaitable[T]]
) -> T:
    """Run `work` in one transaction on a connection of its own."""

    async def run() -> T:
        conn = await asyncpg.connect(db.plain_url(url), timeout=settings.db_timeout_seconds)
        try:
            async with conn.transaction():
                return await work(conn)
        finally:
            await conn.close()

    return asyncio.run(run())


def _key_line(key: ApiKeyInfo) -> str:
    state = "revoked " + key.revoked_at.isoformat() if key.revoked_at else "active"
    return "\t".join(
        [
            key.key_id,
            key.prefix + "…",
            ",".join(key.scopes),
            key.created_at.isoformat(),
            state,
            key.name,
        ]
    )


def cmd_keys_list(_: argparse.Namespace) -> None:
    settings = get_settings()
    keys = _with_connection(settings, _migrate(settings), auth.list_keys)
    print("\t".join(["key_id", "prefix", "scopes", "created_at", "state", "name"]))
    for key in keys:
        print(_key_line(key))


def cmd_keys_revoke(args: argparse.Namespace) -> None:
    try:
        key_id = uuid.UUID(args.key_id)
    except ValueError:
        sys.exit(f"{args.key_id!r} is not a key id: `custintel keys list` shows them")
    settings = get_settings()

    async def revoke(conn: asyncpg.Connection) -> ApiKeyInfo:
        return await auth.revoke_key(conn, key_id, actor="cli")

    try:
        key = _with_connection(settings, _migrate(settings), revoke)
    except errors.NotFound:
        sys.exit(f"no key {key_id}: `custintel keys list` shows them")
    print(_key_line(key))


def cmd_demo(args: argparse.Namespace) -> None:
    """Serve, and meanwhile send a simulated company's data through the API, train, score and
    print what was found; then go on serving."""
    import uvicorn

    from app.demo import tour
    from app.platform import server

    # The demo's own output is the story; the service's logs would drown it. They stay
    # available with CUSTINTEL_LOG_LEVEL / CUSTINTEL_ACCESS_LOG set explicitly.
    os.environ.setdefault("CUSTINTEL_LOG_LEVEL", "WARNING")
    os.environ.setdefault("CUSTINTEL_ACCESS_LOG", "false")
    get_settings.cache_clear()
    settings = get_settings()
    logs.configure(settings.log_level)
    embedded = not settings.database_url
    url = _migrate(settings)
    if embedded:
        db.supervise_embedded(settings.data_dir)
    os.environ["CUSTINTEL_DATABASE_URL"] = url  # the worker and the app share this database
    get_settings.cache_clear()
    key = _create_key(settings, url, name="demo", scopes=["admin"])
    people = _demo_people(settings, url)
    host, port = args.host or settings.host, args.port or settings.port
    wildcard = host in ("0.0.0.0", "::")  # noqa: S104  (not binding: where to call it)
    base_url = f"http://{'127.0.0.1' if wildcard else host}:{port}"
    worker = JobWorker()
    service = uvicorn.Server(
        uvicorn.Config(
            "app.main:create_app",
            factory=True,
            host=host,
            port=port,
            **server.uvicorn_options(settings),
        )
    )

    async def main() -> None:
        serving = asyncio.create_task(service.serve())
        story = asyncio.create_task(
            tour.run(
                base_url,
                key,
                accounts=args.accounts,
                seed=args.seed,
                out=sys.stdout,
                people=people,
            )
        )
        done, _ = await asyncio.wait({serving, story}, return_when=asyncio.FIRST_COMPLETED)
        if story in done and story.exception() is not None:
            service.should_exit = True
            await serving
            raise story.exception()  # type: ignore[misc]
        await serving
        story.cancel()

    try:
        asyncio.run(main())
    except tour.DemoFailed as exc:
        sys.exit(f"custintel demo: {exc}")
    except KeyboardInterrupt:  # Ctrl-C: the service has shut down; nothing went wrong
        print("custintel demo: stopped", file=sys.stderr)
        sys.exit(130)
    finally:
        worker.stop()


def cmd_openapi(args: argparse.Namespace) -> None:
    from app.main import create_app

    spec = json.dumps(create_app(Settings()).openapi(), indent=2, sort_keys=False) + "\n"
    target = Path(args.output) if args.output else OPENAPI_PATH
    if args.output == "-":
        sys.stdout.write(spec)
        return
    target.write_text(spec)
    print(f"wrote {target}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="custintel", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="apply migrations and serve the HTTP API")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int)
    serve.set_defaults(func=cmd_serve)

    demo = sub.add_parser(
        "demo", help="serve, load a simulated SaaS through the API, train, score, show"
    )
    demo.add_argument("--host")
    demo.add_argument("--port", type=int)
    demo.add_argument("--accounts", type=int, default=2000, help="simulated accounts")
    demo.add_argument("--seed", type=int, default=1)
    demo.set_defaults(func=cmd_demo)

    sub.add_parser("migrate", help="apply pending migrations and exit").set_defaults(
        func=cmd_migrate
    )
    sub.add_parser("worker", help="run queued jobs (training) until stopped").set_defaults(
        func=cmd_worker
    )
    train = sub.add_parser("train", help="train a model now, with a progress bar")
    train.add_argument("--target", required=True, help="churn, expansion, or an outcome kind")
    train.add_argument("--horizon-days", type=int, default=90)
    train.add_argument("--snapshot-every-days", type=int, default=30)
    train.add_argument("--as-of", help="RFC 3339; default now")
    train.add_argument("--max-features", type=int)
    train.set_defaults(func=cmd_train)
    score = sub.add_parser("score", help="score every account with the active models, stored")
    score.add_argument("--all", action="store_true", help="every account (required)")
    score.add_argument("--target", action="append", help="only this target; repeatable")
    score.add_argument("--as-of", help="RFC 3339; default now")
    score.add_argument("--top", type=int, default=3, help="reasons kept per score")
    score.set_defaults(func=cmd_score)

    keys = sub.add_parser("keys", help="API keys: create, list, revoke").add_subparsers(
        dest="keys", required=True
    )
    create = keys.add_parser("create", help="create a key; prints it as the last line")
    create.add_argument("--name", required=True)
    create.add_argument("--scopes", required=True, help="comma-separated: " + ",".join(auth.SCOPES))
    create.set_defaults(func=cmd_keys_create)
    keys.add_parser("list", help="every key: id, prefix, scopes, created, state").set_defaults(
        func=cmd_keys_list
    )
    revoke = keys.add_parser("revoke", help="revoke a key at once (audited); idempotent")
    revoke.add_argument("key_id", help="as `custintel keys list` shows it")
    revoke.set_defaults(func=cmd_keys_revoke)
    people = sub.add_parser("users", help="console users: create").add_subparsers(
        dest="users", required=True
    )
    user = people.add_parser(
        "create", help="a console user; prints a new password once, unless --password-stdin"
    )
    user.add_argument("--email", required=True)
    user.add_argument("--name")
    user.add_argument("--role", required=True, choices=["csm", "lead", "admin"])
    user.add_argument("--team", help="a lead sees their team's accounts; no team: every account")
    user.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    user.set_defaults(func=cmd_users_create)

    secrets = sub.add_parser("secrets", help="stored secrets: rotate the key").add_subparsers(
        dest="secrets", required=True
    )
    rotate = secrets.add_parser("rotate", help="seal every stored secret under a new key")
    rotate.add_argument(
        "--new-key", help="the new key (url-safe base64 of 32 bytes); made if absent"
    )
    rotate.set_defaults(func=cmd_secrets_rotate)

    openapi = sub.add_parser("openapi", help="write openapi/openapi.json from the app")
    openapi.add_argument("--output", help="another path, or - for stdout")
    openapi.set_defaults(func=cmd_openapi)
    return p


def _exit_on_sigterm(signum: int, _: object) -> None:
    sys.exit(128 + signum)


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    logs.configure(get_settings().log_level)
    # SIGTERM (docker stop, systemd, kill) ends the process like Ctrl-C does: through Python's
    # exit, so cleanup runs and an embedded Postgres is stopped rather than left orphaned.
    # uvicorn restores this handler after its graceful shutdown and raises the signal again.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    args.func(args)


if __name__ == "__main__":
    main()
