"""One connection per API process that LISTENs to the channels its caches depend on.

Triggers notify a channel on every change to the table behind a cache (models: which model is
active; api_keys: which keys are valid), from any process. Each cache subscribes with what to do
on a notification and on the connection coming up or going down: a cache may be trusted only
while the connection is up, since a change made meanwhile would go unseen.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import asyncpg

from app.platform import db

log = logging.getLogger(__name__)

CHECK_SECONDS = 30.0  # a silent network can drop the connection without a close: probe it


class Listener:
    def __init__(self) -> None:
        self._channels: dict[str, list[Callable[[], None]]] = {}
        self._state: list[Callable[[bool], None]] = []
        self.listening = False

    def subscribe(
        self, channel: str, on_notify: Callable[[], None], on_state: Callable[[bool], None]
    ) -> None:
        """on_notify on each notification of channel; on_state(True/False) as the connection
        comes up or goes down (and False at once, until it first comes up)."""
        self._channels.setdefault(channel, []).append(on_notify)
        self._state.append(on_state)
        on_state(self.listening)

    def _set(self, listening: bool) -> None:
        self.listening = listening
        for callback in self._state:
            callback(listening)

    async def watch(self, connect: Callable[[], Awaitable[asyncpg.Connection]]) -> None:
        """Keep the connection listening (runs until cancelled), reconnecting a second after it
        is lost, so that one that fails at once cannot spin."""
        while True:
            try:
                conn = await connect()
            except db.UNREACHABLE_ERRORS:
                await asyncio.sleep(1.0)
                continue
            try:
                await self._listen(conn)
            except (*db.UNREACHABLE_ERRORS, asyncpg.PostgresError):
                log.warning("lost the change listener; caches are bypassed until it is back")
            finally:
                self._set(False)
                conn.terminate()
            await asyncio.sleep(1.0)

    async def _listen(self, conn: asyncpg.Connection) -> None:
        gone = asyncio.Event()

        def lost(_: object) -> None:
            self._set(False)
            gone.set()

        conn.add_termination_listener(lost)
        for channel, callbacks in self._channels.items():
            for callback in callbacks:
                await conn.add_listener(channel, _ignoring_payload(callback))
        self._set(True)
        while not gone.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(gone.wait(), CHECK_SECONDS)
            if not gone.is_set():
                await conn.execute("SELECT 1", timeout=CHECK_SECONDS)


def _ignoring_payload(callback: Callable[[], None]) -> Callable[..., None]:
    def on_notification(*_: object) -> None:
        callback()

    return on_notification
