"""Privacy (scope `privacy`, or admin): erasures of a person or an account, and the suppression
list they leave."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import StreamingResponse

from app.api.common import StrictJSONRoute, problem_responses
from app.governance import privacy, retention
from app.governance.auth import Privacy
from app.platform import errors, jobs, runtime
from app.schemas.common import Email, Id
from app.schemas.privacy import (
    AccountById,
    ContactByEmail,
    ContactById,
    Erasure,
    ErasureRequest,
    Hash,
    Retention,
    Suppression,
)

router = APIRouter(route_class=StrictJSONRoute, responses=problem_responses(), tags=["privacy"])


def _erasure(job: jobs.Job) -> Erasure:
    result = job.result or {}
    return Erasure.model_validate(
        {
            "erasure_id": job.job_id,
            "status": job.status,
            "progress": job.progress,
            "subject": job.params["hash"],
            "removed": result.get("removed"),
            "suppressed": result.get("suppressed"),
            "error": job.error,
            "created_at": job.created_at,
            "finished_at": job.finished_at,
        }
    )


@router.post("/privacy/erasures", status_code=202, operation_id="request_erasure")
async def request_erasure(request: Request, body: ErasureRequest, who: Privacy) -> Erasure:
    """Erase a contact (by `contact_id` or `email`: its profile and history, identities, events
    with their text, sentiment and themes, and every copy of its identifiers in insights,
    deliveries, held signals, senders' payloads and audit entries) or an account (all of that
    for it and its contacts, plus its outcomes, scores and reasons). The worker runs it; poll
    `GET /v1/privacy/erasures/{id}`. Its identifiers stay suppressed afterwards. A subject that
    is not stored is still suppressed (and the erasure removes nothing)."""
    state = runtime.of(request)
    subject = body.root
    async with state.pool.acquire() as conn:
        job = await privacy.request(
            conn,
            state.settings,
            contact_id=subject.contact_id if isinstance(subject, ContactById) else None,
            email=subject.email if isinstance(subject, ContactByEmail) else None,
            account_id=subject.account_id if isinstance(subject, AccountById) else None,
            actor=who.name,
        )
    return _erasure(job)


@router.get("/privacy/erasures/{erasure_id}", operation_id="get_erasure")
async def get_erasure(
    request: Request, erasure_id: Annotated[str, Path(max_length=64)], _: Privacy
) -> Erasure:
    """An erasure's progress and, at the end, what it removed (counts, no personal values)."""
    async with runtime.of(request).pool.acquire() as conn:
        try:
            job = await jobs.get(conn, erasure_id)
        except errors.NotFound:
            job = None
    if job is None or job.kind != privacy.JOB:
        raise errors.NotFound(f"No erasure {erasure_id!r}.")
    return _erasure(job)


@router.get("/privacy/suppressions", operation_id="list_suppressions")
async def list_suppressions(
    request: Request,
    _: Privacy,
    email: Annotated[Email | None, Query(description="This email's entry.")] = None,
    contact_id: Annotated[Id | None, Query(description="This contact id's entry.")] = None,
    account_id: Annotated[Id | None, Query(description="This account id's entry.")] = None,
    after: Annotated[Hash | None, Query(description="The last hash of the previous page.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[Suppression]:
    """The suppression list: keyed hashes of erased identifiers (never the identifiers). Name
    identifiers to find their entries (their hashes are computed here)."""
    named: list[tuple[privacy.Kind, str]] = []
    named += [("email", email)] if email is not None else []
    named += [("contact", contact_id)] if contact_id is not None else []
    named += [("account", account_id)] if account_id is not None else []
    state = runtime.of(request)
    async with state.pool.acquire() as conn:
        rows = await privacy.suppressions(
            conn, state.settings, names=named, limit=limit, after=after
        )
    return rows


@router.delete("/privacy/suppressions/{hash}", status_code=204, operation_id="lift_suppression")
async def lift_suppression(request: Request, hash: Hash, who: Privacy) -> Response:
    """Lift a suppression: signals naming the identifier are stored again. Audited."""
    async with runtime.of(request).pool.acquire() as conn:
        await privacy.lift(conn, hash, actor=who.name)
    return Response(status_code=204)


EXPORT_SCHEMA = {
    "type": "object",
    "description": "Everything held about the subject.",
    "properties": {
        "exported_at": {"type": "string", "format": "date-time"},
        **{
            name: {"type": "array", "items": {"type": "object"}}
            for name in ("accounts", "contacts", "events", "outcomes", "scores", "insights")
        },
    },
    "required": ["exported_at", "accounts", "contacts", "events", "outcomes", "scores", "insights"],
}


@router.get(
    "/privacy/exports",
    operation_id="export_subject",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/json": {"schema": EXPORT_SCHEMA}}}},
)
async def export_subject(
    request: Request,
    _: Privacy,
    contact_id: Annotated[Id | None, Query(description="A contact, by its id.")] = None,
    email: Annotated[Email | None, Query(description="A contact, by its email.")] = None,
    account_id: Annotated[Id | None, Query(description="An account and its people.")] = None,
) -> StreamingResponse:
    """One JSON document with everything custintel holds about a person (by `contact_id` or
    `email`) or an account: profiles with their history and identities, events with their
    text, sentiment and themes, and for an account its outcomes, scores with their reasons and
    insights (for a person, the insights that quote them). Streamed as it is read: an account
    with a million events is never held in memory. Name exactly one subject."""
    named = [n for n in (contact_id, email, account_id) if n is not None]
    if len(named) != 1:
        raise errors.BadRequest("name exactly one of contact_id, email or account_id")
    pool = runtime.of(request).pool
    conn = await pool.acquire()
    try:
        subject = await privacy.exported(
            conn, contact_id=contact_id, email=email, account_id=account_id
        )
    except BaseException:
        await pool.release(conn)
        raise

    async def stream() -> AsyncIterator[bytes]:
        try:
            async for piece in privacy.export(conn, subject):
                yield piece
        finally:
            await pool.release(conn)

    return StreamingResponse(stream(), media_type="application/json")


@router.get("/privacy/retention", operation_id="get_retention")
async def get_retention(request: Request, _: Privacy) -> Retention:
    """The retention settings (CUSTINTEL_EVENT_RETENTION_DAYS drops whole monthly partitions of
    events; score history, delivery attempts, finished jobs and senders' raw payloads have
    their own), the oldest data of each kind, and when the daily job last applied them."""
    state = runtime.of(request)
    async with state.pool.acquire() as conn:
        return await retention.overview(conn, state.settings)
