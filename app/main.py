"""The application: create_app() wires settings, database, routers, errors and the contract."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator

import asyncpg
import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import TypeAdapter
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Match

from app.api import (
    admin,
    examples,
    health,
    hooks,
    insights,
    metrics,
    models,
    privacy,
    profiles,
    scores,
    segment,
    signals,
    sources,
    voc,
)
from app.api.common import MANUAL_BODIES, describe, field_errors, problem_responses
from app.governance import auth
from app.governance import privacy as privacy_domain
from app.ml import history, serving
from app.platform import db, errors, migrate, notifications, partitions, runtime
from app.platform.jsonbody import JSONObject
from app.platform.middleware import BodyLimit, Decompress, RequestContext
from app.platform.settings import Settings, get_settings
from app.schemas.common import JSON_VALUE_SCHEMA
from app.schemas.insights import InsightEvent
from app.signals import ingest
from app.web import pages

log = logging.getLogger(__name__)

API_VERSION = "0.1.0"
DESCRIPTION = (
    "custintel turns customer signals (events, profiles, outcomes) into scores with reasons. "
    "Every /v1 route needs `Authorization: Bearer <key>`. Errors are RFC 9457 problem+json. "
    "Unknown fields are rejected with 422; free-form data goes in `traits` or `properties`."
)


# Requests allocate many short-lived objects (a batch of 5000 events about 100,000), and with
# CPython's default thresholds (700, 10, 10) the collector also walked everything built at
# startup (FastAPI's routes, pydantic's validators, numpy, LightGBM) over and over: about a third
# of ingest's CPU. What exists once the service is up is frozen out of its sight, and young
# collections run every 10,000 allocations.
GC_THRESHOLDS = (10_000, 10, 10)


def _tune_gc() -> None:
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        url = await asyncio.to_thread(db.database_url, settings)
        timeout = settings.db_statement_timeout_seconds or None
        state.pool = await db.create_pool(
            url, settings, statement_timeout=timeout, acquire_timeout=settings.db_timeout_seconds
        )
        state.partitions = partitions.PartitionManager(
            state.pool, retention_days=settings.event_retention_days
        )
        state.history = history.Buffer(state.pool)
        ready = asyncio.Event()
        keeper = asyncio.create_task(_keep_partitions(state.partitions, settings, ready))
        # Serve once the first pass is done, or after a short wait when the database is away.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ready.wait(), timeout=settings.db_timeout_seconds)
        watcher = asyncio.create_task(
            state.listener.watch(
                lambda: asyncpg.connect(
                    db.plain_url(url),
                    timeout=settings.db_timeout_seconds,
                    server_settings={"application_name": "custintel-listener"},
                )
            )
        )
        _tune_gc()
        try:
            yield
        finally:
            gc.unfreeze()
            keeper.cancel()
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            await state.history.close()
            await state.pool.close()

    app = FastAPI(
        title="custintel",
        version=API_VERSION,
        description=DESCRIPTION,
        lifespan=lifespan,
        separate_input_output_schemas=False,
        docs_url=None,  # served by _serve_docs, with assets from the installed packages
        redoc_url=None,
    )
    _serve_docs(app)
    bootstrap = settings.bootstrap_admin_key
    state = runtime.Runtime(
        settings=settings,
        key_cache=auth.KeyCache(settings.api_key_cache_seconds),
        key_usage=auth.Usage(),
        limits=auth.limits(settings),
        bootstrap_key_hash=(
            None if bootstrap is None else auth.hash_key(bootstrap.get_secret_value())
        ),
        known_ids=ingest.KnownIds(),
        models=serving.Models(),
        listener=notifications.Listener(),
        migration_head=migrate.head_revision(),
        cpu=asyncio.Semaphore(2),
        screen=privacy_domain.Screen(settings),
    )
    app.state.runtime = state
    state.listener.subscribe(
        serving.MODELS_CHANNEL, state.models.forget_active, state.models.listening
    )
    state.listener.subscribe(auth.KEYS_CHANNEL, state.key_cache.forget, state.key_cache.listening)
    app.include_router(health.router)
    # Routes are matched one by one in this order: the hottest first (events, then scores).
    for router in (
        signals.router,
        scores.router,
        profiles.router,
        models.router,
        insights.router,
        admin.router,
        sources.router,
        voc.router,
        privacy.router,
        metrics.router,
    ):
        app.include_router(router, prefix="/v1")
    app.include_router(segment.router)
    app.include_router(hooks.router)
    app.include_router(pages.router)
    app.mount("/app/static", StaticFiles(directory=pages.STATIC), name="console-static")

    @app.webhooks.post("insight")
    def insight_webhook(body: InsightEvent) -> None:
        """Sent to webhook destinations for every insight a routing rule delivers. Headers:
        webhook-id (the same on every retry: deduplicate by it), webhook-timestamp and
        webhook-signature (Standard Webhooks, HMAC-SHA256 with the destination's secret)."""

    _install_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(Decompress, max_bytes=settings.max_body_bytes)  # outside: limit inflated
    app.add_middleware(RequestContext, log_requests=settings.access_log)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


DOCS_ASSETS = "/docs-assets"


def _serve_docs(app: FastAPI) -> None:
    """/docs (Swagger UI) and /redoc with their scripts and styles from the fastapi-offline
    package, not a CDN: an integrator's server is often offline or behind a proxy, and a blank
    page there is no documentation."""
    app.mount(
        DOCS_ASSETS,
        StaticFiles(packages=[("fastapi_offline", "static")]),
        name="docs-assets",
    )

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="custintel API",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png",
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url="/openapi.json",
            title="custintel API",
            redoc_js_url=f"{DOCS_ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{DOCS_ASSETS}/favicon.png",
            with_google_fonts=False,
        )


async def _keep_partitions(
    manager: partitions.PartitionManager, settings: Settings, ready: asyncio.Event
) -> None:
    """Keep next months' event partitions created; retried while the database is away."""
    while True:
        try:
            await manager.ensure_ahead(settings.partitions_ahead_months)
            ready.set()
            delay = 6 * 3600.0
        except Exception as exc:
            if not db.is_unreachable(exc):
                log.exception("creating event partitions failed")
            delay = 30.0
        await asyncio.sleep(delay)


def _problem(error: errors.CustintelError) -> Response:
    return Response(
        orjson.dumps(error.problem()),
        status_code=error.status,
        headers=error.headers,
        media_type=errors.PROBLEM_JSON,
    )


def _console(request: Request) -> bool:
    return request.url.path == "/app" or request.url.path.startswith("/app/")


def _install_error_handlers(app: FastAPI) -> None:
    async def on_custintel_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, errors.CustintelError)
        if _console(request):
            return pages.error_page(request, error)
        return _problem(error)

    async def on_validation_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, RequestValidationError)
        errs = field_errors(list(error.errors()))
        problem = errors.InvalidPayload(describe(errs), errors=errs)
        return pages.error_page(request, problem) if _console(request) else _problem(problem)

    async def on_http_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, StarletteHTTPException)
        headers = dict(error.headers or {})
        if error.status_code == 405:
            # Starlette names only the first route's methods; a path served by several routes
            # (GET and PUT of one resource) must list them all.
            headers["Allow"] = ", ".join(_allowed_methods(app, request))
        problem = errors.CustintelError(str(error.detail), headers=headers)
        problem.status, problem.title = error.status_code, _reason(error.status_code)
        problem.slug = "http"
        return _problem(problem)

    async def on_database_error(_: Request, error: Exception) -> Response:
        if db.is_unreachable(error):
            log.warning("database unreachable", extra={"error": type(error).__name__})
            return _problem(
                errors.ServiceUnavailable("The database is unreachable; retry shortly.")
            )
        if isinstance(error, asyncpg.DataError):  # SQLSTATE class 22: a value Postgres refused
            return _problem(errors.InvalidPayload("A value could not be stored as sent."))
        log.exception("database error", exc_info=error)
        return _problem(errors.CustintelError("Internal error; it has been logged."))

    async def on_unexpected(_: Request, error: Exception) -> Response:
        if db.is_unreachable(error):
            return _problem(
                errors.ServiceUnavailable("The database is unreachable; retry shortly.")
            )
        log.exception("unhandled error", exc_info=error)
        return _problem(errors.CustintelError("Internal error; it has been logged."))

    async def on_disconnect(_: Request, __: Exception) -> Response:
        # The client went away mid-body (or was cut off by a body deadline): nobody reads this
        # answer, and it is not the service's error to log.
        return Response(status_code=400)

    app.add_exception_handler(ClientDisconnect, on_disconnect)
    app.add_exception_handler(errors.CustintelError, on_custintel_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(asyncpg.PostgresError, on_database_error)
    app.add_exception_handler(OSError, on_unexpected)
    app.add_exception_handler(Exception, on_unexpected)


def _allowed_methods(app: FastAPI, request: Request) -> list[str]:
    methods: set[str] = set()
    for route in app.router.routes:
        match, _ = route.matches({**request.scope, "method": "__none__"})
        if match is not Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


def _reason(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _openapi(app: FastAPI) -> JSONObject:
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
        webhooks=app.webhooks.routes,
        separate_input_output_schemas=False,
    )
    _, defs = TypeAdapter.json_schemas(
        [(m.__name__, "validation", TypeAdapter(m)) for m in MANUAL_BODIES],
        ref_template="#/components/schemas/{model}",
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name, definition in defs.get("$defs", {}).items():
        components.setdefault(name, definition)
    components["JsonValue"] = JSON_VALUE_SCHEMA
    examples.add_to(schema)
    # What a receiver answers custintel's webhooks, not FastAPI's default for a route.
    for operations in schema.get("webhooks", {}).values():
        for operation in operations.values():
            operation["responses"] = {
                "2XX": {"description": "Acknowledged. Any other answer, or none, is retried."}
            }
    # FastAPI's default 422 body is replaced by problem+json (the error handler renders every
    # validation error so); where a route kept FastAPI's default answer, it says so too.
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            answer = operation.get("responses", {}).get("422", {})
            body = answer.get("content", {}).get("application/json", {})
            if body.get("schema", {}).get("$ref", "").endswith("/HTTPValidationError"):
                operation["responses"]["422"] = problem_responses(422)[422]
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    app.openapi_schema = schema
    return schema


app = create_app
