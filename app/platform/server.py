"""The HTTP/1.1 protocol custintel serves with: uvicorn's httptools protocol with the limits it
lacks, so that a client cannot hold memory, CPU or connections without sending a request.

- A request head (request line and headers) larger than CUSTINTEL_MAX_HEADER_BYTES, or with more
  than CUSTINTEL_MAX_HEADERS headers, gets 431 and the connection is closed. The parser would
  otherwise buffer a header of any size (one of 150 MB cost 27 s of CPU).
- A head not complete within CUSTINTEL_HEADER_TIMEOUT_SECONDS of the connection or of the
  request's first byte (slowloris), or a body not complete within CUSTINTEL_BODY_TIMEOUT_SECONDS
  of its head, gets 408 and the connection is closed. A connection that never sends is closed too.
- An answer sent before its request's body arrived (401 before an upload, 413) closes the
  connection instead of reading and discarding the rest.
- Connections beyond CUSTINTEL_MAX_CONNECTIONS per process get 503 (uvicorn's limit_concurrency).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.platform.settings import Settings, get_settings

_END_OF_HEAD = b"\r\n\r\n"


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """What `custintel serve` and `demo` give uvicorn.Config besides the app."""
    return {
        "loop": "uvloop",
        "http": GuardedHttpToolsProtocol,
        "limit_concurrency": settings.max_connections,
        "log_config": None,
        "access_log": False,
    }


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        limits = get_settings()  # cached by get_settings
        self._max_head = limits.max_header_bytes
        self._max_headers = limits.max_headers
        self._head_timeout = limits.header_timeout_seconds
        self._body_timeout = limits.body_timeout_seconds
        self._in_head = True
        self._head_bytes = 0
        self._tail = b""  # the last bytes of the head so far, to find its end across chunks
        self._header_count = 0
        self._message_complete = False
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self._head_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._in_head and self._head_bytes + len(data) > self._max_head:
            # The head ends in this chunk within the limit, or the request is refused.
            end = (self._tail + data).find(_END_OF_HEAD)
            if end == -1 or self._head_bytes - len(self._tail) + end > self._max_head:
                self._refuse(431, "Request header fields too large.")
                return
        if self._in_head:
            self._head_bytes += len(data)
            self._tail = (self._tail + data)[-3:]
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if not self._in_head:  # a following request on a kept-alive connection
            self._in_head = True
            self._head_bytes, self._tail, self._header_count = 0, b"", 0
        self._message_complete = False
        self._arm(self._head_timeout)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count <= self._max_headers:
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self._header_count > self._max_headers:
            self._refuse(431, f"More than {self._max_headers} header fields.")
            return
        self._arm(self._body_timeout)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._message_complete = True
        self._disarm()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        if not self._message_complete and not self.transport.is_closing():
            # Answered before the body arrived: reading the rest only to discard it would let
            # anyone upload without a key.
            self.transport.close()
        super().on_response_complete()

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self._message_complete or self.transport.is_closing():
            return
        started = self.cycle is not None and self.cycle.response_started
        if self._in_head or not started:
            self._refuse(408, "Request not received in time.")
        else:
            self.transport.close()

    def _refuse(self, status: int, message: str) -> None:
        """Answer `status` in plain text and close, whatever the parser holds."""
        self._disarm()
        reason = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}[status]
        body = message.encode()
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (status, reason, len(body), body)
        )
        self.transport.close()
