"""The Segment Tracking API under /segment: an SDK whose host is http://HOST:PORT/segment sends
its identify, group, track, page, screen, alias and batch calls here unchanged.

Auth as Segment's: HTTP Basic with a custintel key (scope `ingest`) as the user name and an empty
password (what the SDKs send), a Bearer key, or `writeKey` in the body. Jitsu's SDK sends each
call to `{host}/api/s/{call}` (or `/api/s/s2s/{call}` from a server) with its key in
`X-Write-Key`: those paths are here too. The Segment paths are in the OpenAPI contract (so a
key limited to operations can name them); Jitsu's are the same calls and stay out of it.

Keys limited to some operations hold here as on the REST routes: each call stands for the REST
operations it performs (identify and alias change a contact, group an account and, with a
`userId`, the contact it links, track, page and screen are events). A key may make a call when it
names the call's own operation (`segment_track`, ...) or every REST operation it stands for; a
key limited to webhook sources makes none.
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials

from app.api import common
from app.api.common import manual_body, problem_responses
from app.governance import auth
from app.people import held
from app.platform import errors, jsonbody, runtime
from app.schemas.segment import SegmentAnswer, SegmentBatch, SegmentCall
from app.signals import segment

router = APIRouter(tags=["segment"], responses=problem_responses(400, 401, 403, 413, 422, 429, 503))

# The REST operations each call stands for (see the module's docstring).
STANDS_FOR: dict[str, tuple[str, ...]] = {
    "identify": ("upsert_contact",),
    "alias": ("upsert_contact",),
    "group": ("upsert_account",),
    "track": ("ingest_event",),
    "page": ("ingest_event",),
    "screen": ("ingest_event",),
}


def _credentials(header: str) -> HTTPAuthorizationCredentials:
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        return HTTPAuthorizationCredentials(scheme="Bearer", credentials=value.strip())
    if scheme.lower() == "basic":
        try:
            user = base64.b64decode(value.strip(), validate=True).decode().partition(":")[0]
        except (binascii.Error, UnicodeDecodeError):
            user = ""
        if user:
            return HTTPAuthorizationCredentials(scheme="Bearer", credentials=user)
    raise errors.Unauthorized(
        "Send the key as HTTP Basic user name (empty password), as a Bearer key, or as writeKey."
    )


async def _principal(request: Request, credentials: HTTPAuthorizationCredentials) -> auth.Principal:
    principal = await auth.authenticate(request, credentials)
    if not principal.allows("ingest"):
        raise errors.Forbidden("This key lacks the `ingest` scope.", missing_scope="ingest")
    if principal.sources is not None:
        raise errors.Forbidden("This key is limited to webhook sources; Segment is not one.")
    request.scope[auth.PRINCIPAL] = principal  # the writer its trait keys count against
    return principal


def _needs(message: segment.Message) -> set[str]:
    needed = set(STANDS_FOR[message.call])
    if message.call == "group" and message.body.get("userId") not in (None, ""):
        needed.add("upsert_contact")  # the contact it links to the account
    return needed


def _check_operations(principal: auth.Principal, messages: list[segment.Message]) -> None:
    """403 naming the calls this key may not make (a batch is refused whole: its sender learns
    of it, where an error entry would go unread by the SDKs)."""
    allowed = principal.operations
    if allowed is None:
        return
    refused = sorted(
        {m.call for m in messages if f"segment_{m.call}" not in allowed and _needs(m) - allowed}
    )
    if refused:
        raise errors.Forbidden(
            f"This key may not make {', '.join(refused)} calls: it needs "
            + " or ".join(f"`segment_{c}`" for c in refused)
            + ", or the operations they stand for."
        )


async def _body(request: Request, limit: int) -> bytes:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise errors.BadRequest(f"Larger than Segment's limit of {limit // 1024} KB.")
        chunks.append(chunk)
    return b"".join(chunks)


async def _handle(request: Request, call: str | None) -> Response:
    received_at = datetime.now(UTC)
    header = request.headers.get("authorization")
    write_key = request.headers.get("x-write-key")
    principal: auth.Principal
    if header:  # checked before the body is read
        principal = await _principal(request, _credentials(header))
    elif write_key:
        credentials = HTTPAuthorizationCredentials(scheme="Bearer", credentials=write_key)
        principal = await _principal(request, credentials)
    limit = segment.MAX_CALL_BYTES if call else segment.MAX_BATCH_BYTES
    payload = jsonbody.parse(await _body(request, limit), refuse_nul=False)
    if not header and not write_key:
        key = payload.get("writeKey") if isinstance(payload, dict) else None
        if not isinstance(key, str) or not key:
            raise errors.Unauthorized(
                "Missing write key: HTTP Basic with the key as user name, or writeKey."
            )
        principal = await _principal(
            request, HTTPAuthorizationCredentials(scheme="Bearer", credentials=key)
        )
    try:
        messages, problems = segment.read(payload, call=call, received_at=received_at)
    except segment.Invalid as invalid:
        raise errors.BadRequest(f"{call or 'batch'}: {invalid}") from None
    _check_operations(principal, messages)
    async with runtime.of(request).pool.acquire() as conn:
        ctx = common.ingest_context(request, received_at)
        tally = await segment.store(conn, messages, ctx=ctx)
        await held.attach(conn, tally.known, ctx=ctx)
    refused = sorted(problems + tally.errors)
    if call is not None and refused:
        raise errors.BadRequest(f"{call}: {refused[0][1]}")
    answer = {
        "success": True,
        "accepted": tally.accepted,
        "duplicates": tally.duplicates,
        "unresolved": tally.unresolved,
        "suppressed": tally.suppressed,
        "errors": [{"index": i, "detail": d} for i, d in refused],
        "dropped": [{"index": i, "detail": d} for i, d in tally.dropped],
    }
    return Response(orjson.dumps(answer), media_type="application/json")


# The contract shows the Bearer form; the SDKs' HTTP Basic (the key as user name) and `writeKey`
# carry the same key.
_SECURITY: dict[str, object] = {"security": [{"HTTPBearer": []}]}
_ANSWER: dict[int | str, dict[str, object]] = {
    200: {"model": SegmentAnswer, "description": "Taken (as Segment answers: 200 with counts)."}
}


@router.post(
    "/segment/v1/batch",
    operation_id="segment_batch",
    response_model=None,
    responses=_ANSWER,
    openapi_extra={**manual_body(SegmentBatch), **_SECURITY},
)
async def segment_batch(request: Request) -> Response:
    """Several Segment calls (an SDK's flush): each is checked and stored on its own; `errors`
    names each one not taken. Each call needs the operation it stands for (see the README)."""
    return await _handle(request, None)


def _single(call: str) -> None:
    async def endpoint(request: Request) -> Response:
        return await _handle(request, call)

    endpoint.__doc__ = (
        f"A Segment `{call}` call, as the SDKs send it (HTTP Basic with the key as user name, "
        "a Bearer key, or `writeKey`); the README's table says how it maps."
    )
    router.add_api_route(
        f"/segment/v1/{call}",
        endpoint,
        methods=["POST"],
        name=f"segment_{call}",
        operation_id=f"segment_{call}",
        response_model=None,
        responses=_ANSWER,
        openapi_extra={**manual_body(SegmentCall), **_SECURITY},
    )
    if call in JITSU_CALLS:
        for kind in ("", "s2s/"):
            path, name = f"/segment/api/s/{kind}{call}", f"jitsu_{kind.strip('/')}{call}"
            router.add_api_route(
                path, endpoint, methods=["POST"], name=name, include_in_schema=False
            )


JITSU_CALLS = ("identify", "group", "track", "page")
for _call in segment.CALLS:
    _single(_call)
