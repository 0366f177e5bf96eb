"""The console's pages under /app/. Each route signs the user in (or sends them to the sign-in
page), checks the role the page needs, calls the domain, and renders a template; every form
carries the session's CSRF token and every change is audited with who made it. A request from
htmx (HX-Request) gets the part of the page it swaps; any other gets the whole page or a
redirect, so that every page works with JavaScript off."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

import asyncpg
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from app.activation import insights
from app.api.common import ingest_context
from app.governance import audit, auth
from app.ml import performance, promotion, registry
from app.platform import errors, jobs, runtime
from app.platform.jsonbody import JSONObject
from app.signals import sources
from app.value import clv
from app.voc import learned, monthly, surveys, themes
from app.web import account, book, charts, users

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
COOKIE = "custintel_session"
templates = Jinja2Templates(directory=HERE / "templates")
templates.env.globals["charts"] = charts
router = APIRouter(prefix="/app", include_in_schema=False)

# Pages are the user's own view of private data: never cached, never framed, scripts and
# styles from this server only.
HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
}


REPORT_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


class SignInNeeded(errors.CustintelError):
    status = 401
    slug = "sign-in"
    title = "Sign in"


class Forbidden(errors.CustintelError):
    status = 403
    slug = "forbidden"
    title = "Not for your role"


def _page(
    request: Request, name: str, context: dict[str, Any], *, status: int = 200
) -> HTMLResponse:
    response = templates.TemplateResponse(request, name, context, status_code=status)
    response.headers.update(HEADERS)
    return response


def error_page(request: Request, error: errors.CustintelError) -> Response:
    """How a /app page answers a refusal: the sign-in page for one who is not signed in, else
    the problem in words with its status."""
    if isinstance(error, SignInNeeded):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/app/login?{urlencode({'next': target})}", status_code=303)
    return _page(
        request,
        "error.html",
        {"title": error.title, "detail": error.detail, "status": error.status, "session": None},
        status=error.status,
    )


async def _session(request: Request) -> users.Session:
    token = request.cookies.get(COOKIE)
    if token:
        async with runtime.of(request).pool.acquire() as conn:
            found = await users.session(conn, token)
        if found is not None:
            return found
    raise SignInNeeded("Sign in to continue.")


def _need(session: users.Session, role: users.Role) -> None:
    if not session.user.may(role):
        raise Forbidden(f"This page is for the {role} role and above.")


async def _form(request: Request, session: users.Session) -> dict[str, str]:
    """The posted form, once its CSRF token (field `csrf`, or header X-CSRF-Token from htmx)
    matches the session's."""
    form = await request.form()
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    sent = fields.pop("csrf", None) or request.headers.get("x-csrf-token")
    if not users.csrf_ok(session, sent):
        raise errors.Forbidden("The form's CSRF token is missing or not this session's.")
    return fields


def _htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


def _back(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=303)


def _address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _safe_next(target: str | None) -> str:
    # Only a path of this console: never another host (an open redirect).
    if target and target.startswith("/app") and not target.startswith("//"):
        return target
    return "/app/"


# --- sign in and out ------------------------------------------------------------------------------


@router.get("/login")
async def login_form(request: Request, next: str | None = None) -> HTMLResponse:
    return _page(request, "login.html", {"next": _safe_next(next), "session": None, "error": None})


@router.post("/login")
async def login(request: Request) -> Response:
    form = await request.form()
    email, password = str(form.get("email") or ""), str(form.get("password") or "")
    target = _safe_next(str(form.get("next") or ""))
    state = runtime.of(request)
    async with state.pool.acquire() as conn, conn.transaction():
        signed = await users.sign_in(
            conn, email=email, password=password, address=_address(request), settings=state.settings
        )
    if signed is None:
        return _page(
            request,
            "login.html",
            {"next": target, "session": None, "error": "Wrong email or password."},
            status=401,
        )
    token, _ = signed
    response = _back(target)
    response.set_cookie(
        COOKIE,
        token,
        max_age=int(state.settings.session_hours * 3600),
        path="/app",
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    session = await _session(request)
    await _form(request, session)
    token = request.cookies.get(COOKIE, "")
    async with runtime.of(request).pool.acquire() as conn:
        await users.sign_out(conn, token)
    response = _back("/app/login")
    response.delete_cookie(COOKIE, path="/app")
    return response


# --- my book -------------------------------------------------------------------------------------


@router.get("/")
async def my_book(
    request: Request,
    segment: Annotated[str | None, Query(max_length=255)] = None,
    band: Annotated[str | None, Query(max_length=16)] = None,
    owner: Annotated[str | None, Query(max_length=320)] = None,
    order: Annotated[str | None, Query(max_length=16)] = None,
    view: uuid.UUID | None = None,
    cursor: Annotated[str | None, Query(max_length=1024)] = None,
) -> HTMLResponse:
    session = await _session(request)
    async with runtime.of(request).pool.acquire() as conn:
        visible = await users.owners(conn, session.user)
        if view is not None:
            filters = (await book.view(conn, session.user, view)).filters
        else:
            filters = book.Filters.of(
                {"segment": segment, "band": band, "owner": owner, "order": order}
            )
        found = await book.page(conn, visible=visible, filters=filters, cursor=cursor)
        segments, owners = await book.choices(conn, visible)
        saved = await book.views(conn, session.user)
    context = {
        "session": session,
        "page": found,
        "filters": filters,
        "segments": segments,
        "owners": owners,
        "views": saved,
        "bands": book.BANDS,
        "next_query": urlencode({**filters.as_json(), "cursor": found.next_cursor})
        if found.next_cursor
        else None,
    }
    return _page(request, "_book_rows.html" if _htmx(request) else "book.html", context)


@router.post("/views")
async def save_view(request: Request) -> Response:
    session = await _session(request)
    form = await _form(request, session)
    filters = book.Filters.of(dict(form))
    async with runtime.of(request).pool.acquire() as conn, conn.transaction():
        saved = await book.save_view(conn, session.user, name=form.get("name", ""), filters=filters)
    return _back(f"/app/?view={saved.view_id}")


# --- the account ---------------------------------------------------------------------------------


@router.get("/accounts/{account_id}")
async def account_page(
    request: Request,
    account_id: str,
    types: Annotated[list[str] | None, Query(max_length=50)] = None,
    cursor: Annotated[str | None, Query(max_length=1024)] = None,
) -> HTMLResponse:
    session = await _session(request)
    state = runtime.of(request)
    now = datetime.now(UTC)
    async with state.pool.acquire() as conn:
        visible = await users.owners(conn, session.user)
        found = await account.visible(conn, visible, account_id)
        shown = await account.view(
            conn,
            state.models,
            found,
            types=[t for t in types or [] if t] or None,
            cursor=cursor,
            now=now,
        )
        value = None
        if not _htmx(request):  # a page of the timeline needs no value
            value = await clv.of_account(conn, state.settings, found.account_id, as_of=now)
    query = (
        urlencode([("types", t) for t in types or []] + [("cursor", shown.next_events)])
        if shown.next_events
        else None
    )
    context = {
        "session": session,
        "view": shown,
        "types": types or [],
        "next_events": query,
        "clv": value,
    }
    return _page(request, "_timeline.html" if _htmx(request) else "account.html", context)


# --- the inbox -----------------------------------------------------------------------------------


@router.get("/inbox")
async def inbox(
    request: Request,
    everyone: bool = False,
    show: Annotated[str, Query(pattern="^(open|all)$")] = "open",
) -> HTMLResponse:
    session = await _session(request)
    async with runtime.of(request).pool.acquire() as conn:
        visible = await users.owners(conn, session.user)
        mine = not everyone or not session.user.may("lead")
        found = await insights.list_insights(
            conn,
            owner=session.user.email if mine else None,
            limit=200,
            open_only=show == "open",
        )
    if visible is not None:
        found = [i for i in found if i.owner_email in visible]
    context = {
        "session": session,
        "insights": found,
        "everyone": not mine,
        "show": show,
        "actions": insights.ACTION_KINDS,
    }
    return _page(request, "_inbox_list.html" if _htmx(request) else "inbox.html", context)


@router.post("/inbox/{insight_id}")
async def act_on_insight(request: Request, insight_id: str) -> Response:
    session = await _session(request)
    form = await _form(request, session)
    now = datetime.now(UTC)
    async with runtime.of(request).pool.acquire() as conn, conn.transaction():
        visible = await users.owners(conn, session.user)
        updated = await insights.act(
            conn,
            insight_id,
            owners=visible,
            actor=session.user.actor,
            by=session.user.email,
            status=form.get("status") or None,
            action=form.get("action") or None,
            note=form.get("note") or None,
            ctx=ingest_context(request, now, writer=session.user.actor),
        )
    if _htmx(request):
        context = {"session": session, "insight": updated, "actions": insights.ACTION_KINDS}
        return _page(request, "_insight.html", context)
    return _back("/app/inbox")


# --- is the score right? -------------------------------------------------------------------------


@router.get("/models")
async def models_page(request: Request) -> HTMLResponse:
    """What the worker's latest evaluation found of each active model, read back rather than
    measured here: measuring drift computes the features of every scored account."""
    session = await _session(request)
    shown = []
    async with runtime.of(request).pool.acquire() as conn:
        evaluation = await performance.latest_evaluation(conn)
        for record in await registry.all_active(conn):
            info = await registry.info(conn, record.model_id)
            entry = (evaluation.targets.get(record.target) if evaluation else None) or {}
            if entry.get("model_id") != record.model_id:
                entry = {}  # evaluated before this model became active
            realized = entry.get("realized") or {}
            bins = realized.get("calibration") or []
            points = [(b["predicted"], b["observed"]) for b in bins]
            rate = realized.get("positive_rate")
            lift = (
                [(f"{10 - i}", o / rate) for i, (_, o) in enumerate(reversed(points))]
                if rate
                else []
            )
            shown.append(
                {
                    "info": info,
                    "realized": realized,
                    "drift": entry.get("drift"),
                    "calibration": points,
                    "lift": lift,
                }
            )
        candidates = [m for m in await registry.infos(conn, target=None) if m.status != "active"]
    context = {
        "session": session,
        "models": shown,
        "others": candidates[:20],
        "evaluated_at": evaluation.at if evaluation else None,
        "every_hours": runtime.of(request).settings.evaluate_every_hours,
    }
    return _page(request, "models.html", context)


@router.post("/models/evaluate")
async def evaluate(request: Request) -> Response:
    session = await _session(request)
    _need(session, "admin")
    await _form(request, session)
    async with runtime.of(request).pool.acquire() as conn, conn.transaction():
        job = await jobs.enqueue(conn, kind="evaluate", params={})
        await _audit(conn, session, "models.evaluation_requested", job.job_id, {})
    return _back("/app/models")


@router.get("/models/{model_id}/report")
async def model_report(request: Request, model_id: str) -> HTMLResponse:
    await _session(request)
    from app.ml import report

    async with runtime.of(request).pool.acquire() as conn:
        page = await report.render(conn, model_id=model_id, now=datetime.now(UTC))
    response = HTMLResponse(page)
    # The report is self-contained: its styles are inline and its plots data: images.
    response.headers.update({**HEADERS, "Content-Security-Policy": REPORT_POLICY})
    return response


@router.post("/models/{target}/retrain")
async def retrain(request: Request, target: str) -> Response:
    session = await _session(request)
    _need(session, "admin")
    await _form(request, session)
    async with runtime.of(request).pool.acquire() as conn, conn.transaction():
        active = await registry.active(conn, target)
        if active is None:
            raise errors.NotFound(f"No active model for {target!r}.")
        job = await jobs.enqueue(
            conn, kind="train", params={"target": target, "horizon_days": active.horizon_days}
        )
        await _audit(conn, session, "model.retrain_requested", target, {"job_id": str(job.job_id)})
    return _back("/app/models")


@router.post("/models/{target}/rollback")
async def rollback(request: Request, target: str) -> Response:
    session = await _session(request)
    _need(session, "admin")
    await _form(request, session)
    async with runtime.of(request).pool.acquire() as conn, conn.transaction():
        await promotion.rollback(conn, target=target, actor=session.user.actor)
    return _back("/app/models")


# --- voice of the customer -----------------------------------------------------------------------


@router.get("/voc")
async def voc_page(
    request: Request, segment: Annotated[str | None, Query(max_length=255)] = None
) -> HTMLResponse:
    session = await _session(request)
    segment = segment or None
    async with runtime.of(request).pool.acquire() as conn:
        kept = await monthly.read(conn, segment=segment)
        if kept is None:  # before the worker's first count (or with counting off): count here
            until = datetime.now(UTC)
            since = monthly.window_start(until)
            summary = await surveys.summarise(conn, since=since, until=until, segment=segment)
            mix = await surveys.sentiment_mix(conn, since=since, until=until, segment=segment)
            counted_at = None
        else:
            summary, mix, since, counted_at = kept.summary, kept.mix, kept.since, kept.counted_at
        listed = await themes.listing(conn)
        examples = await themes.examples(conn, [t.theme_id for t in listed[:12]])
        reader = await learned.described(conn)
    context = {
        "session": session,
        "summary": summary,
        "mix": mix,
        "themes": listed,
        "examples": examples,
        "reader": reader,
        "nps_bars": [(m.month, m.nps.nps) for m in summary.by_month],
        "nps_intervals": [
            (m.nps.interval[0], m.nps.interval[1]) if m.nps.interval else None
            for m in summary.by_month
        ],
        "segment": segment,
        "since": since,
        "counted_at": counted_at,
    }
    return _page(request, "voc.html", context)


@router.post("/voc/themes/{theme_id}")
async def change_theme(request: Request, theme_id: str) -> Response:
    session = await _session(request)
    _need(session, "lead")
    form = await _form(request, session)
    merge_into = form.get("merge_into") or None
    async with runtime.of(request).pool.acquire() as conn:
        await themes.update(
            conn,
            theme_id,
            name=(form.get("name") or "").strip()[:100] or None,
            pinned=None,
            merge_into=merge_into,
            unmerge=form.get("unmerge") == "1",
        )
        await _audit(
            conn,
            session,
            "theme.changed",
            theme_id,
            {k: v for k, v in form.items() if k in ("name", "merge_into", "unmerge")},
        )
    return _back("/app/voc")


# --- sources and users (admin) -------------------------------------------------------------------


@router.get("/sources")
async def sources_page(request: Request) -> HTMLResponse:
    session = await _session(request)
    _need(session, "admin")
    async with runtime.of(request).pool.acquire() as conn:
        listed = await sources.list_all(conn)
        rejected = {
            s.source_id: await sources.rejections(conn, s.source_id, before=None, limit=20)
            for s in listed
        }
    return _page(
        request, "sources.html", {"session": session, "sources": listed, "rejected": rejected}
    )


@router.post("/sources/{source_id}/rejections/{rejection_id}/replay")
async def replay(request: Request, source_id: uuid.UUID, rejection_id: int) -> Response:
    session = await _session(request)
    _need(session, "admin")
    await _form(request, session)
    now = datetime.now(UTC)
    async with runtime.of(request).pool.acquire() as conn, conn.transaction():
        done = await sources.replay(
            conn,
            source_id,
            rejection_id,
            ctx=ingest_context(request, now, writer=session.user.actor),
        )
        await _audit(
            conn,
            session,
            "source.rejection_replayed",
            str(source_id),
            {"rejection_id": rejection_id, "status": done.status},
        )
    return _back("/app/sources")


async def _people(
    request: Request,
    session: users.Session,
    *,
    made: tuple[users.User, str] | None = None,
    key: str | None = None,
    status: int = 200,
) -> HTMLResponse:
    """The users and API keys page; a password or a key just made is shown this once."""
    async with runtime.of(request).pool.acquire() as conn:
        listed = await users.listing(conn)
        keys = await auth.list_keys(conn)
    context = {
        "session": session,
        "users": listed,
        "roles": users.ROLES,
        "made": made,
        "keys": keys,
        "scopes": auth.SCOPES,
        "key": key,
    }
    return _page(request, "users.html", context, status=status)


@router.get("/users")
async def users_page(request: Request) -> HTMLResponse:
    session = await _session(request)
    _need(session, "admin")
    return await _people(request, session)


@router.post("/keys")
async def create_key(request: Request) -> Response:
    session = await _session(request)
    _need(session, "admin")
    form = await request.form()
    fields = await _form(request, session)
    scopes = [s for s in auth.SCOPES if s in form.getlist("scopes")]
    name = fields.get("name", "").strip()[:255]
    if not scopes or not name:
        raise errors.InvalidPayload("A key needs a name and at least one scope.")
    async with runtime.of(request).pool.acquire() as conn, conn.transaction():
        _, secret = await auth.create_key(conn, name=name, scopes=scopes, actor=session.user.actor)
    return await _people(request, session, key=secret, status=201)


@router.post("/keys/{key_id}/revoke")
async def revoke_key(request: Request, key_id: uuid.UUID) -> Response:
    session = await _session(request)
    _need(session, "admin")
    await _form(request, session)
    async with runtime.of(request).pool.acquire() as conn, conn.transaction():
        await auth.revoke_key(conn, key_id, actor=session.user.actor)
    runtime.of(request).key_cache.forget()
    return _back("/app/users")


@router.post("/users")
async def create_user(request: Request) -> Response:
    session = await _session(request)
    _need(session, "admin")
    form = await _form(request, session)
    role = users.role_of(form.get("role", ""))
    password = users.new_password()
    async with runtime.of(request).pool.acquire() as conn, conn.transaction():
        made = await users.create(
            conn,
            email=form.get("email", ""),
            name=form.get("name", "") or form.get("email", ""),
            role=role,
            team=form.get("team") or None,
            password=password,
            actor=session.user.actor,
        )
    # The password is shown once, to the admin who made the user, and never again.
    return await _people(request, session, made=(made, password), status=201)


@router.post("/users/{user_id}/disable")
async def disable_user(request: Request, user_id: uuid.UUID) -> Response:
    session = await _session(request)
    _need(session, "admin")
    await _form(request, session)
    async with runtime.of(request).pool.acquire() as conn, conn.transaction():
        await users.disable(conn, user_id, actor=session.user.actor)
    return _back("/app/users")


async def _audit(
    conn: asyncpg.Connection, session: users.Session, action: str, target: str, details: JSONObject
) -> None:
    await audit.record(
        conn, actor=session.user.actor, action=action, target=target, details=details
    )


templates.env.filters["q"] = lambda value: quote(str(value), safe="")
