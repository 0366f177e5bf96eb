"""The Segment Tracking API under /segment: an SDK whose host is http://HOST:PORT/segment sends
its identify, group, track, page, screen, alias and batch calls here unchanged.

Auth as Segment's: HTTP Basic with a custintel key (scope `ingest`) as the user name and an empty
password (what the SDKs send), a Bearer key, or `writeKey` in the body. Jitsu's SDK sends each
call to `{host}/api/s/{call}` (or `/api/s/s2s/{call}` from a server) with its key in
`X-Write-Key`: those paths are here too. Not in the OpenAPI
contract: its clients are the SDKs, and the README has the mapping.
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials

from app import auth, errors, jsonbody, profiles, runtime, segment
from app.api.common import future_tolerance

router = APIRouter(include_in_schema=False)


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


async def _principal(request: Request, credentials: HTTPAuthorizationCredentials) -> None:
    principal = await auth.authenticate(request, credentials)
    if not principal.allows("ingest"):
        raise errors.Forbidden("This key lacks the `ingest` scope.", missing_scope="ingest")


async def _body(request: Request, limit: int) -> bytes:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise errors.BadRequest(f"Larger than Segment's limit of {limit // 1024} KB.")
        chunks.append(chunk)
    return b"".join(chunks)


def context(request: Request, now: datetime) -> segment.Context:
    state = runtime.of(request)
    settings = state.settings
    return segment.Context(
        now=now,
        tolerance=future_tolerance(request),
        limits=profiles.TraitLimits(
            per_profile=settings.max_traits_per_profile, overall=settings.max_trait_keys
        ),
        known=state.known_ids,
        partition_manager=state.partitions,
        unresolved_days=settings.unresolved_days,
        screen=state.screen,
    )


async def _handle(request: Request, call: str | None) -> Response:
    received_at = datetime.now(UTC)
    header = request.headers.get("authorization")
    write_key = request.headers.get("x-write-key")
    if header:  # checked before the body is read
        await _principal(request, _credentials(header))
    elif write_key:
        credentials = HTTPAuthorizationCredentials(scheme="Bearer", credentials=write_key)
        await _principal(request, credentials)
    limit = segment.MAX_CALL_BYTES if call else segment.MAX_BATCH_BYTES
    payload = jsonbody.parse(await _body(request, limit), refuse_nul=False)
    if not header and not write_key:
        key = payload.get("writeKey") if isinstance(payload, dict) else None
        if not isinstance(key, str) or not key:
            raise errors.Unauthorized(
                "Missing write key: HTTP Basic with the key as user name, or writeKey."
            )
        await _principal(request, HTTPAuthorizationCredentials(scheme="Bearer", credentials=key))
    try:
        messages, problems = segment.read(payload, call=call, received_at=received_at)
    except segment.Invalid as invalid:
        raise errors.BadRequest(f"{call or 'batch'}: {invalid}") from None
    async with runtime.of(request).pool.acquire() as conn:
        tally = await segment.store(conn, messages, ctx=context(request, received_at))
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
    }
    return Response(orjson.dumps(answer), media_type="application/json")


@router.post("/segment/v1/batch")
async def segment_batch(request: Request) -> Response:
    return await _handle(request, None)


def _single(call: str) -> None:
    async def endpoint(request: Request) -> Response:
        return await _handle(request, call)

    router.add_api_route(f"/segment/v1/{call}", endpoint, methods=["POST"], name=f"segment_{call}")
    if call in JITSU_CALLS:
        for kind in ("", "s2s/"):
            path, name = f"/segment/api/s/{kind}{call}", f"jitsu_{kind.strip('/')}{call}"
            router.add_api_route(path, endpoint, methods=["POST"], name=name)


JITSU_CALLS = ("identify", "group", "track", "page")
for _call in segment.CALLS:
    _single(_call)
