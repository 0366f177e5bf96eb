"""What one API process holds while it runs, typed: settings, the database pool, caches, limits,
the model cache and the change listener. Routers and dependencies reach it with `of(request)`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from starlette.requests import HTTPConnection

if TYPE_CHECKING:
    import asyncio

    import asyncpg

    from app.governance import auth, privacy
    from app.ml import history, serving
    from app.platform import notifications, partitions
    from app.platform.settings import Settings
    from app.signals import ingest


@dataclass
class Runtime:
    settings: Settings
    key_cache: auth.KeyCache
    key_usage: auth.Usage
    limits: auth.Limits
    bootstrap_key_hash: str | None  # CUSTINTEL_BOOTSTRAP_ADMIN_KEY, hashed
    known_ids: ingest.KnownIds
    models: serving.Models
    listener: notifications.Listener
    migration_head: str | None
    cpu: asyncio.Semaphore  # threads doing CPU work on request (scoring), a bounded few
    screen: privacy.Screen  # suppressed identifiers, asked before anything is stored
    # Opened by the lifespan, before the first request.
    pool: asyncpg.Pool = field(init=False)
    history: history.Buffer = field(init=False)  # on-request scores, written behind
    partitions: partitions.PartitionManager = field(init=False)


def of(connection: HTTPConnection) -> Runtime:
    runtime: Runtime = connection.app.state.runtime
    return runtime
