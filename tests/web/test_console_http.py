"""The console over HTTP: sign-in, sessions, CSRF, and who sees and changes what."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import orjson
import pytest

from app.ml import history
from app.platform.settings import Settings
from tests.fixtures.console import PASSWORD, SignedIn, csrf_of, make_user, signer
from tests.fixtures.scores import new_scores, score
from tests.fixtures.uplift import ranked_fit

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def signed_in(app: object) -> SignedIn:
    return signer(app)


@pytest.fixture
def browser(app: object) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=transport, base_url="http://custintel.test")


async def _accounts(client: httpx.AsyncClient, owners: dict[str, tuple[str, float]]) -> None:
    for account_id, (owner, mrr) in owners.items():
        answer = await client.put(
            f"/v1/accounts/{account_id}",
            json={"name": f"Name {account_id}", "segment": "smb", "mrr": mrr, "owner_email": owner},
        )
        assert answer.status_code in (200, 201), answer.text


def _rows(page: str) -> list[str]:
    """The account ids of the book's rows, in order."""
    return re.findall(r'href="/app/accounts/([^"]+)"', page)


async def test_a_page_asks_to_sign_in_and_sign_in_sets_a_strict_cookie(
    browser: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    await make_user(conn, "csm@example.com", "csm")
    first = await browser.get("/app/accounts/a1?x=1")
    assert first.status_code == 303
    assert first.headers["location"] == "/app/login?next=%2Fapp%2Faccounts%2Fa1%3Fx%3D1"
    wrong = await browser.post("/app/login", data={"email": "csm@example.com", "password": "nope"})
    assert wrong.status_code == 401 and "Wrong email or password." in wrong.text
    assert "set-cookie" not in wrong.headers
    right = await browser.post(
        "/app/login",
        data={"email": "CSM@example.com ", "password": PASSWORD, "next": "https://evil.example/"},
    )
    assert right.status_code == 303 and right.headers["location"] == "/app/"
    cookie = right.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "path=/app" in cookie
    assert "secure" not in cookie  # plain HTTP here; behind TLS the cookie is Secure
    stored = await conn.fetchval("SELECT token_hash FROM web_sessions")
    assert stored not in right.headers["set-cookie"]  # only its hash is kept
    page = await browser.get("/app/")
    assert page.status_code == 200 and "My book" in page.text
    assert page.headers["cache-control"] == "no-store"
    assert "script-src 'self'" in page.headers["content-security-policy"]


async def test_failed_sign_ins_are_limited_per_email(
    browser: httpx.AsyncClient, conn: asyncpg.Connection, settings: Settings
) -> None:
    await make_user(conn, "csm@example.com", "csm")
    for _ in range(settings.login_failures_per_email):
        wrong = await browser.post("/app/login", data={"email": "csm@example.com", "password": "x"})
        assert wrong.status_code == 401
    refused = await browser.post(
        "/app/login", data={"email": "csm@example.com", "password": PASSWORD}
    )
    assert refused.status_code == 429 and "Too many failed sign-ins" in refused.text


async def test_the_book_lists_only_my_accounts_by_value_at_risk_with_the_change(
    client: httpx.AsyncClient, conn: asyncpg.Connection, signed_in: SignedIn
) -> None:
    await make_user(conn, "ana@example.com", "csm")
    await make_user(conn, "bo@example.com", "csm")
    await _accounts(
        client,
        {
            "a-small": ("ana@example.com", 100.0),  # 100 x 0.9 = 90 at risk
            "a-big": ("ana@example.com", 1000.0),  # 1000 x 0.3 = 300
            "a-none": ("ana@example.com", 50.0),  # not scored: 0, last
            "b-1": ("bo@example.com", 5000.0),
        },
    )
    before = NOW - timedelta(days=7)
    await history.store(conn, [score("a-small", before, 0.5), score("a-big", before, 0.3)])
    await history.store(
        conn,
        [score("a-small", NOW, 0.9), score("a-big", NOW, 0.3), score("b-1", NOW, 0.9)],
    )
    async with signed_in("ana@example.com") as ana:
        page = await ana.get("/app/")
    assert _rows(page.text) == ["a-big", "a-small", "a-none"]
    assert "b-1" not in page.text
    assert "↑ 40 pts" in page.text  # a-small rose from 50% to 90% since its last score
    assert "Support tickets still open: 3" in page.text


async def test_the_book_pages_by_cursor_in_the_same_order(
    client: httpx.AsyncClient, conn: asyncpg.Connection, signed_in: SignedIn
) -> None:
    await make_user(conn, "lead@example.com", "lead")
    owners = {f"acc-{i:03d}": ("x@example.com", float(i)) for i in range(60)}
    unscored = {f"new-{i:03d}": ("x@example.com", 1000.0) for i in range(45)}
    await _accounts(client, owners | unscored)
    await history.store(conn, [score(a, NOW, 0.5) for a in owners])
    seen: list[str] = []
    async with signed_in("lead@example.com") as lead:
        path = "/app/"
        for _ in range(3):  # 50 scored; 10 scored and 40 not; the last 5
            page = await lead.get(path)
            seen += _rows(page.text)
            more = re.search(r'href="/app/\?([^"]+)">Next page', page.text)
            if more is None:
                break
            path = "/app/?" + more.group(1).replace("&amp;", "&")
    # Scored by value at risk, then the accounts with no churn score (whatever their MRR).
    expected = [f"acc-{i:03d}" for i in reversed(range(60))]
    expected += [f"new-{i:03d}" for i in reversed(range(45))]
    assert seen == expected and more is None


async def test_an_mrr_change_moves_an_account_in_the_book_before_its_next_score(
    client: httpx.AsyncClient, conn: asyncpg.Connection, signed_in: SignedIn
) -> None:
    await make_user(conn, "lead@example.com", "lead")
    await _accounts(client, {"a": ("x@example.com", 100.0), "b": ("x@example.com", 200.0)})
    await history.store(conn, [score("a", NOW, 0.5), score("b", NOW, 0.5)])
    async with signed_in("lead@example.com") as lead:
        assert _rows((await lead.get("/app/")).text) == ["b", "a"]
        upgraded = await client.put("/v1/accounts/a", json={"mrr": 300})
        assert upgraded.status_code in (200, 201)
        assert _rows((await lead.get("/app/")).text) == ["a", "b"]
    assert await conn.fetchval("SELECT at_risk FROM latest_scores WHERE account_id = 'a'") == 150


async def test_the_book_shows_how_much_acting_helps_once_uplift_ranked_the_accounts(
    client: httpx.AsyncClient, conn: asyncpg.Connection, signed_in: SignedIn
) -> None:
    await make_user(conn, "lead@example.com", "lead")
    await _accounts(client, {"a": ("x@example.com", 100.0), "b": ("x@example.com", 200.0)})
    await history.store(conn, [score("a", NOW, 0.5), score("b", NOW, 0.5)])
    async with signed_in("lead@example.com") as lead:
        assert "Acting helps" not in (await lead.get("/app/")).text  # no uplift fit yet
        await ranked_fit(conn, {"a": 0.12})
        page = (await lead.get("/app/")).text
    assert "Acting helps" in page
    row_a = page[page.index('href="/app/accounts/a"') :].split("</tr>", 1)[0]
    row_b = page[page.index('href="/app/accounts/b"') :].split("</tr>", 1)[0]
    assert "churn -12 pts" in row_a and "churn " not in row_b  # b: not ranked, a dash


async def test_the_book_orders_by_where_acting_helps_most_across_pages(
    client: httpx.AsyncClient, conn: asyncpg.Connection, signed_in: SignedIn
) -> None:
    await make_user(conn, "lead@example.com", "lead")
    ranked = {f"acc-{i:03d}": ("x@example.com", float(1000 - i)) for i in range(60)}
    await _accounts(client, ranked | {"new-1": ("x@example.com", 5000.0)})
    await history.store(conn, [score(a, NOW, 0.5) for a in [*ranked, "new-1"]])
    async with signed_in("lead@example.com") as lead:
        page = (await lead.get("/app/", params={"order": "uplift"})).text
        assert 'id="order"' not in page  # no fit has ranked: value at risk, no choice
        assert _rows(page)[0] == "new-1"
        # Acting helps the low-MRR accounts most: the reverse of value at risk.
        await ranked_fit(conn, {a: i / 1000 for i, a in enumerate(ranked)})
        seen: list[str] = []
        path = "/app/?order=uplift"
        for _ in range(3):
            page = (await lead.get(path)).text
            seen += _rows(page)
            more = re.search(r'href="/app/\?([^"]+)">Next page', page)
            if more is None:
                break
            path = "/app/?" + more.group(1).replace("&amp;", "&")
        assert "Accounts ranked by how much acting helps" in page
        by_risk = _rows((await lead.get("/app/")).text)
    assert seen == [f"acc-{i:03d}" for i in reversed(range(60))] and more is None
    assert by_risk[:2] == ["new-1", "acc-000"]  # value at risk is still the default


async def test_a_csm_gets_a_404_for_an_account_someone_else_owns(
    client: httpx.AsyncClient, conn: asyncpg.Connection, signed_in: SignedIn
) -> None:
    await make_user(conn, "ana@example.com", "csm")
    await make_user(conn, "admin@example.com", "admin")
    await _accounts(client, {"mine": ("ana@example.com", 10.0), "theirs": ("bo@example.com", 10.0)})
    async with signed_in("ana@example.com") as ana:
        mine = await ana.get("/app/accounts/mine")
        assert mine.status_code == 200
        # Its lifetime value, or why there is none: it pays, but no churn score says for how long.
        assert "Lifetime value:</strong> none." in mine.text
        assert "Pays MRR but has no churn score yet" in mine.text
        other = await ana.get("/app/accounts/theirs")
        missing = await ana.get("/app/accounts/nobody")
    assert other.status_code == missing.status_code == 404
    assert "theirs" in other.text and "Name theirs" not in other.text
    async with signed_in("admin@example.com") as admin:
        assert (await admin.get("/app/accounts/theirs")).status_code == 200


async def test_a_lead_sees_their_team_and_a_lead_without_a_team_sees_everyone(
    client: httpx.AsyncClient, conn: asyncpg.Connection, signed_in: SignedIn
) -> None:
    await make_user(conn, "ana@example.com", "csm", team="east")
    await make_user(conn, "cy@example.com", "csm", team="west")
    await make_user(conn, "east@example.com", "lead", team="east")
    await make_user(conn, "all@example.com", "lead")
    await _accounts(client, {"e1": ("ana@example.com", 10.0), "w1": ("cy@example.com", 10.0)})
    async with signed_in("east@example.com") as east:
        assert _rows((await east.get("/app/")).text) == ["e1"]
        assert (await east.get("/app/accounts/w1")).status_code == 404
    async with signed_in("all@example.com") as lead:
        assert sorted(_rows((await lead.get("/app/")).text)) == ["e1", "w1"]


@pytest.mark.parametrize(
    ("path", "csm", "lead", "admin"),
    [
        ("/app/", 200, 200, 200),
        ("/app/inbox", 200, 200, 200),
        ("/app/models", 200, 200, 200),
        ("/app/voc", 200, 200, 200),
        ("/app/sources", 403, 403, 200),
        ("/app/users", 403, 403, 200),
    ],
)
async def test_each_page_answers_each_role(
    conn: asyncpg.Connection, signed_in: SignedIn, path: str, csm: int, lead: int, admin: int
) -> None:
    for role, wanted in (("csm", csm), ("lead", lead), ("admin", admin)):
        await make_user(conn, f"{role}@example.com", role)  # type: ignore[arg-type]
        async with signed_in(f"{role}@example.com") as user:
            answer = await user.get(path)
        assert answer.status_code == wanted, (role, path, answer.text[:300])


@pytest.mark.parametrize(
    ("path", "least"),
    [
        ("/app/models/churn/retrain", "admin"),
        ("/app/models/churn/rollback", "admin"),
        ("/app/models/evaluate", "admin"),
        ("/app/voc/themes/t1", "lead"),
        ("/app/users", "admin"),
        ("/app/keys", "admin"),
    ],
)
async def test_each_change_needs_its_role(
    conn: asyncpg.Connection, signed_in: SignedIn, path: str, least: str
) -> None:
    await make_user(conn, "csm@example.com", "csm")
    async with signed_in("csm@example.com") as user:
        token = csrf_of((await user.get("/app/")).text)
        refused = await user.post(
            path, data={"csrf": token, "email": "x@example.com", "role": "csm"}
        )
    assert refused.status_code == 403, refused.text[:300]
    assert f"for the {least} role" in refused.text


async def test_a_form_without_its_csrf_token_is_refused_and_changes_nothing(
    client: httpx.AsyncClient,
    conn: asyncpg.Connection,
    settings: Settings,
    signed_in: SignedIn,
) -> None:
    await make_user(conn, "ana@example.com", "csm")
    await _accounts(client, {"mine": ("ana@example.com", 10.0)})
    await new_scores(conn, settings, [score("mine", NOW, 0.9)])
    insight_id = await conn.fetchval("SELECT insight_id FROM insights")
    async with signed_in("ana@example.com") as ana:
        bare = await ana.post(f"/app/inbox/{insight_id}", data={"status": "resolved"})
        forged = await ana.post(
            f"/app/inbox/{insight_id}", data={"status": "resolved", "csrf": "x"}
        )
    assert bare.status_code == forged.status_code == 403
    assert await conn.fetchval("SELECT status FROM insights") == "open"


async def test_acting_from_the_inbox_stores_an_action_event_and_is_audited(
    client: httpx.AsyncClient,
    conn: asyncpg.Connection,
    settings: Settings,
    signed_in: SignedIn,
) -> None:
    await make_user(conn, "ana@example.com", "csm")
    await make_user(conn, "bo@example.com", "csm")
    await _accounts(client, {"mine": ("ana@example.com", 10.0)})
    await new_scores(conn, settings, [score("mine", NOW, 0.9)])
    insight_id = await conn.fetchval("SELECT insight_id FROM insights")
    async with signed_in("bo@example.com") as bo:
        token = csrf_of((await bo.get("/app/")).text)
        assert "mine" not in (await bo.get("/app/inbox")).text
        theirs = await bo.post(
            f"/app/inbox/{insight_id}", data={"csrf": token, "status": "resolved"}
        )
        assert theirs.status_code == 404
    async with signed_in("ana@example.com") as ana:
        inbox = await ana.get("/app/inbox")
        assert insight_id in inbox.text
        token = csrf_of(inbox.text)
        acked = await ana.post(
            f"/app/inbox/{insight_id}", data={"csrf": token, "status": "acknowledged"}
        )
        assert acked.status_code == 303
        logged = await ana.post(
            f"/app/inbox/{insight_id}",
            data={"csrf": token, "action": "call", "note": "Spoke to Bo \x00about renewal"},
            headers={"HX-Request": "true"},
        )
    assert logged.status_code == 200 and f'id="insight-{insight_id}"' in logged.text
    assert "<html" not in logged.text  # htmx gets the row it swaps, not the page
    event = await conn.fetchrow(
        "SELECT account_id, source, properties FROM events WHERE type = 'action_taken'"
    )
    assert event["account_id"] == "mine" and event["source"] == "console"
    properties = orjson.loads(event["properties"])
    assert properties == {
        "kind": "call",
        "insight_id": insight_id,
        "by": "ana@example.com",
        "note": "Spoke to Bo about renewal",
    }
    assert await conn.fetchval("SELECT status FROM insights") == "acknowledged"
    actions = [
        tuple(r)
        for r in await conn.fetch(
            "SELECT actor, action FROM audit_log WHERE target = $1 ORDER BY id", insight_id
        )
    ]
    assert actions == [
        ("user:ana@example.com", "insight.acknowledged"),
        ("user:ana@example.com", "insight.action_logged"),
    ]


async def test_a_saved_view_applies_its_filters_for_its_owner_only(
    client: httpx.AsyncClient, conn: asyncpg.Connection, signed_in: SignedIn
) -> None:
    await make_user(conn, "lead@example.com", "lead")
    await make_user(conn, "other@example.com", "lead")
    await _accounts(client, {"h": ("x@example.com", 10.0), "l": ("x@example.com", 10.0)})
    await history.store(conn, [score("h", NOW, 0.9), score("l", NOW, 0.01)])
    async with signed_in("lead@example.com") as lead:
        token = csrf_of((await lead.get("/app/")).text)
        saved = await lead.post("/app/views", data={"csrf": token, "name": "Red", "band": "high"})
        assert saved.status_code == 303
        location = saved.headers["location"]
        assert _rows((await lead.get(location)).text) == ["h"]
    async with signed_in("other@example.com") as other:
        assert (await other.get(location)).status_code == 404


async def test_an_admin_makes_a_user_whose_password_is_shown_once(
    conn: asyncpg.Connection, signed_in: SignedIn, browser: httpx.AsyncClient
) -> None:
    await make_user(conn, "admin@example.com", "admin")
    async with signed_in("admin@example.com") as admin:
        token = csrf_of((await admin.get("/app/users")).text)
        made = await admin.post(
            "/app/users", data={"csrf": token, "email": "new@example.com", "role": "csm"}
        )
        assert made.status_code == 201
        password = re.search(r"shown this once: <code>([^<]+)</code>", made.text)
        assert password
        again = await admin.get("/app/users")
    assert password.group(1) not in again.text
    signed = await browser.post(
        "/app/login", data={"email": "new@example.com", "password": password.group(1)}
    )
    assert signed.status_code == 303
    made_by = await conn.fetchval(
        "SELECT actor FROM audit_log WHERE action = 'user.created' AND target = 'new@example.com'"
    )
    assert made_by == "user:admin@example.com"


async def test_an_admin_makes_an_api_key_shown_once_and_revokes_it(
    conn: asyncpg.Connection, signed_in: SignedIn, browser: httpx.AsyncClient
) -> None:
    await make_user(conn, "admin@example.com", "admin")
    async with signed_in("admin@example.com") as admin:
        token = csrf_of((await admin.get("/app/users")).text)
        made = await admin.post(
            "/app/keys", data={"csrf": token, "name": "crm sync", "scopes": ["read", "ingest"]}
        )
        assert made.status_code == 201
        key = re.search(
            r"shown this once \(it is stored as a hash only\): <code>([^<]+)</code>", made.text
        )
        assert key
        listed = await admin.get("/app/users")
        assert key.group(1) not in listed.text and "crm sync" in listed.text
        headers = {"Authorization": f"Bearer {key.group(1)}"}
        assert (await browser.get("/v1/accounts", headers=headers)).status_code == 200
        key_id = await conn.fetchval("SELECT key_id FROM api_keys WHERE name = 'crm sync'")
        revoked = await admin.post(f"/app/keys/{key_id}/revoke", data={"csrf": token})
        assert revoked.status_code == 303
    assert (await browser.get("/v1/accounts", headers=headers)).status_code == 401
