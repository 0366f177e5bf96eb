"""Pure ASGI middleware: request ids with an access log line, gzip request bodies, and the body
size limit."""

from __future__ import annotations

import itertools
import logging
import os
import re
import secrets
import time
import zlib

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.platform import errors, logs

access = logging.getLogger("custintel.access")

_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class _Ids:
    """Request ids unique across processes and restarts: a random prefix per process and a
    counter. uuid4 read the OS's random source on every request, a system call that releases the
    GIL; under scoring load the profiler put it at about half a millisecond a call, most of it
    spent taking the GIL back from a busy thread."""

    def __init__(self) -> None:
        self.reseed()
        os.register_at_fork(after_in_child=self.reseed)

    def reseed(self) -> None:
        self.prefix = secrets.token_hex(8)
        self.counter = itertools.count(1)

    def next(self) -> str:
        return f"{self.prefix}{next(self.counter):016x}"  # 32 hex digits, like a uuid


_ids = _Ids()


class RequestContext:
    def __init__(self, app: ASGIApp, *, log_requests: bool) -> None:
        self.app = app
        self.log_requests = log_requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        rid = incoming if _SAFE_ID.match(incoming) else _ids.next()
        token = logs.request_id.set(rid)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if self.log_requests:
                access.info(
                    "request",
                    extra={
                        "method": scope["method"],
                        "path": scope["path"],
                        "status": status,
                        "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                    },
                )
            logs.request_id.reset(token)


class BodyLimit:
    """413 for bodies over the limit, whether announced by Content-Length or streamed."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            try:
                too_large = int(declared) > self.max_bytes
            except ValueError:
                too_large = False
            if too_large:
                await self._reject(send)
                return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise errors.PayloadTooLarge(self._detail())
            return message

        await self.app(scope, limited_receive, send)

    def _detail(self) -> str:
        return f"Request body exceeds {self.max_bytes} bytes (CUSTINTEL_MAX_BODY_BYTES)."

    async def _reject(self, send: Send) -> None:
        await _reply(send, errors.PayloadTooLarge(self._detail()))


class Decompress:
    """Request bodies sent with `Content-Encoding: gzip` are inflated as they are read, at most
    a little past the body limit per chunk, and BodyLimit (inside) counts what they inflate to,
    so a small body cannot inflate past it. Any other encoding is 415."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        encodings = [v.strip().lower() for n, v in scope["headers"] if n == b"content-encoding"]
        if not encodings or encodings == [b"identity"]:
            await self.app(scope, receive, send)
            return
        if encodings != [b"gzip"]:
            await _reply(
                send, errors.UnsupportedMediaType("Content-Encoding must be gzip or identity.")
            )
            return
        scope = {
            **scope,
            "headers": [
                (n, v)
                for n, v in scope["headers"]
                if n not in (b"content-encoding", b"content-length")
            ],
        }
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        limit = self.max_bytes + 1

        async def inflating_receive() -> Message:
            message = await receive()
            if message["type"] != "http.request":
                return message
            try:
                body = inflater.decompress(message.get("body", b""), limit)
            except zlib.error:
                raise errors.BadRequest("The body is not valid gzip.") from None
            if inflater.unconsumed_tail:
                raise errors.PayloadTooLarge(
                    f"Request body inflates past {self.max_bytes} bytes (CUSTINTEL_MAX_BODY_BYTES)."
                )
            if not message.get("more_body", False) and not inflater.eof:
                raise errors.BadRequest("The gzip body ends before its end.")
            return {**message, "body": body}

        await self.app(scope, inflating_receive, send)


async def _reply(send: Send, error: errors.CustintelError) -> None:
    body = orjson.dumps(error.problem())
    await send(
        {
            "type": "http.response.start",
            "status": error.status,
            "headers": [
                (b"content-type", errors.PROBLEM_JSON.encode()),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
