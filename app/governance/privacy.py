"""Personal data, governed: erasure of a person or an account, and the suppression of what was
erased.

Erasure (a `privacy_erasure` job): a contact's profile with its history, identities and merged
ids, its events (at any account) with their text and properties, their sentiment and themes;
then every copy of its identifiers anywhere else (insights, delivery payloads and attempts,
unresolved signals, senders' raw payloads, audit entries, findings, jobs, other events' texts
and properties, accounts' and other contacts' traits and history; owners' emails are emptied):
a copy is found by any of the subject's markers (its ids, emails,
identifiers and the ids of its erased events) in a text or JSON column, and the row is deleted
where it exists for the subject (an insight, a delivery, a held signal, a finding) or redacted
where it belongs to others (a marker in a string becomes ERASED). An account: all of that for
the account and every contact it ever had, plus its outcomes, scores, insights, rollups,
history and identities.

Suppression: an erased identifier is remembered only as a keyed hash (HMAC-SHA256 under the
installation's pepper, a random key kept sealed by app.governance.vault), so that later signals
naming it are acknowledged and not stored (counted as `suppressed`). Audit entries name the subject
by that hash alone, and the erasure job's own parameters are replaced by it when it ends.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

import asyncpg
import orjson

from app.governance import audit, vault
from app.people import identities
from app.platform import errors, jobs
from app.platform.jsonbody import JSONObject
from app.platform.settings import Settings
from app.schemas.privacy import Suppression

ERASED = "[erased]"
JOB = "privacy_erasure"
Kind = Literal["account", "contact", "email", "identity"]
_PEPPER = "suppression_pepper"


# --- keyed hashes ------------------------------------------------------------------------------

_peppers: dict[str, bytes] = {}


async def pepper(conn: asyncpg.Connection, settings: Settings) -> bytes:
    """The installation's hashing key: made once, kept sealed, read once per process."""
    cached = _peppers.get(str(settings.database_url))
    if cached is not None:
        return cached
    fresh = vault.seal_bytes(settings, secrets.token_bytes(32))
    await conn.execute(
        "INSERT INTO installation_secrets (name, sealed) VALUES ($1, $2) "
        "ON CONFLICT (name) DO NOTHING",
        _PEPPER,
        fresh,
    )
    sealed = await conn.fetchval("SELECT sealed FROM installation_secrets WHERE name = $1", _PEPPER)
    key = vault.unseal_bytes(settings, sealed)
    _peppers[str(settings.database_url)] = key
    return key


def keyed(key: bytes, kind: Kind, value: str) -> str:
    """The hash an identifier is suppressed and audited by (emails by their lower case)."""
    if kind == "email":
        value = value.strip().lower()
    mac = _keyed_with(key).copy()  # keyed once: half of the cost of each hash (ingest's names)
    mac.update(f"{kind}\x00{value}".encode())
    return mac.hexdigest()


@functools.lru_cache(maxsize=8)
def _keyed_with(key: bytes) -> hmac.HMAC:
    return hmac.new(key, digestmod=hashlib.sha256)


async def suppressed(
    conn: asyncpg.Connection, settings: Settings, names: Iterable[tuple[Kind, str]]
) -> set[tuple[Kind, str]]:
    """Which of these identifiers are suppressed (one indexed lookup)."""
    wanted = {(k, v) for k, v in names if v}
    if not wanted:
        return set()
    key = await pepper(conn, settings)
    hashes = {keyed(key, k, v): (k, v) for k, v in wanted}
    found = await conn.fetch(
        "SELECT hash FROM privacy_suppressions WHERE hash = ANY($1::text[])", list(hashes)
    )
    return {hashes[r["hash"]] for r in found}


_EMAIL = re.compile(rb"[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9.-]{1,253}\.[A-Za-z]{2,63}")


def emails_in(value: object) -> list[tuple[Kind, str]]:
    """Every email anywhere in a value (a sender's payload, an event's text and properties, a
    profile's traits), as names to screen: an erased person named in any field keeps the whole
    item out, at every door alike."""
    raw = orjson.dumps(value, default=str)
    if b"@" not in raw:  # most items: no regex at all
        return []
    return [("email", e.decode().lower()) for e in set(_EMAIL.findall(raw))]


@dataclass(frozen=True)
class Screen:
    """What ingest asks before storing: which of the identifiers a batch names are suppressed."""

    settings: Settings

    async def blocked(
        self, conn: asyncpg.Connection, names: Iterable[tuple[Kind, str | None]]
    ) -> set[tuple[Kind, str]]:
        return await suppressed(conn, self.settings, ((k, v) for k, v in names if v))

    async def without_consent(self, conn: asyncpg.Connection, contacts: Iterable[str]) -> set[str]:
        """Which of these contacts lack a category CUSTINTEL_CONSENT_REQUIRED names (a contact
        not stored yet has given none)."""
        required = self.settings.consent_required
        wanted = sorted(set(contacts))
        if not required or not wanted:
            return set()
        given = {
            r[0]
            for r in await conn.fetch(
                "SELECT contact_id FROM contacts WHERE contact_id = ANY($1::text[]) "
                "AND consent @> $2::jsonb",
                wanted,
                orjson.dumps(dict.fromkeys(required, True)).decode(),
            )
        }
        return set(wanted) - given


async def suppress(
    conn: asyncpg.Connection,
    settings: Settings,
    names: Iterable[tuple[Kind, str]],
    *,
    erasure_id: str | None,
) -> list[str]:
    key = await pepper(conn, settings)
    rows = sorted({(keyed(key, k, v), k) for k, v in names if v})
    await conn.executemany(
        "INSERT INTO privacy_suppressions (hash, kind, erasure_id) VALUES ($1, $2, $3) "
        "ON CONFLICT (hash) DO NOTHING",
        [(h, k, erasure_id) for h, k in rows],
    )
    return [h for h, _ in rows]


async def lift(conn: asyncpg.Connection, hash_: str, *, actor: str) -> None:
    """Signals naming the identifier are stored again; audited."""
    async with conn.transaction():
        deleted = await conn.fetchval(
            "DELETE FROM privacy_suppressions WHERE hash = $1 RETURNING kind", hash_
        )
        if deleted is None:
            raise errors.NotFound("No suppression with this hash.")
        await audit.record(conn, actor=actor, action="privacy.suppression_lifted", target=hash_)


async def suppressions(
    conn: asyncpg.Connection,
    settings: Settings,
    *,
    names: Sequence[tuple[Kind, str]],
    limit: int,
    after: str | None,
) -> list[Suppression]:
    """The suppression list (hashes only), or the entries of these identifiers."""
    key = await pepper(conn, settings)
    wanted = [keyed(key, kind, value) for kind, value in names] if names else None
    rows = await conn.fetch(
        "SELECT hash, kind, erasure_id, created_at FROM privacy_suppressions "
        "WHERE ($1::text[] IS NULL OR hash = ANY($1)) AND ($2::text IS NULL OR hash > $2) "
        "ORDER BY hash LIMIT $3",
        wanted,
        after,
        limit,
    )
    return [Suppression.model_validate(dict(r)) for r in rows]


# --- erasure -----------------------------------------------------------------------------------


@dataclass
class Subject:
    """What is erased and what marks its copies."""

    accounts: set[str] = field(default_factory=set)  # erased whole
    contacts: set[str] = field(default_factory=set)
    emails: set[str] = field(default_factory=set)
    identities: set[tuple[str, str]] = field(default_factory=set)  # contacts' and accounts'
    events: set[str] = field(default_factory=set)

    def markers(self) -> list[str]:
        """Strings that are the subject's wherever they are a whole value."""
        found = self.accounts | self.contacts | self.emails | self.events
        found |= {v for _, v in self.identities} | {f"{k}:{v}" for k, v in self.identities}
        found |= {f"email:{e}" for e in self.emails}
        return sorted(found)

    def names(self) -> list[tuple[Kind, str]]:
        named: list[tuple[Kind, str]] = [("account", a) for a in self.accounts]
        named += [("contact", c) for c in self.contacts]
        named += [("email", e) for e in self.emails]
        named += [("identity", f"{k}:{v}") for k, v in self.identities]
        return named


async def request(
    conn: asyncpg.Connection,
    settings: Settings,
    *,
    contact_id: str | None,
    email: str | None,
    account_id: str | None,
    actor: str,
) -> jobs.Job:
    """Enqueue the erasure of one subject; audited by the subject's hash alone."""
    kind: Kind
    kind, value = (
        ("contact", contact_id)
        if contact_id is not None
        else ("email", email)
        if email is not None
        else ("account", account_id)
    )
    assert value is not None
    subject_hash = keyed(await pepper(conn, settings), kind, value)
    async with conn.transaction():
        job = await jobs.enqueue(
            conn,
            kind=JOB,
            params={"kind": kind, "value": value, "hash": subject_hash},
        )
        await audit.record(
            conn,
            actor=actor,
            action="privacy.erasure_requested",
            target=subject_hash,
            details={"kind": kind, "job_id": job.job_id},
        )
    return job


async def _contacts_subject(
    conn: asyncpg.Connection, contact_ids: set[str], emails: set[str], subject: Subject
) -> None:
    """Every id, email and identifier of these contacts (and those their emails name)."""
    emails = {e.strip().lower() for e in emails}
    if emails:
        for r in await conn.fetch(
            "SELECT contact_id FROM identities WHERE kind = 'email' AND value = ANY($1::text[]) "
            "UNION SELECT contact_id FROM contacts WHERE lower(email) = ANY($1::text[])",
            sorted(emails),
        ):
            contact_ids.add(r[0])
    if contact_ids:
        for r in await conn.fetch(
            "SELECT merged_id FROM merged_ids WHERE subject = 'contact' "
            "AND survivor_id = ANY($1::text[])",
            sorted(contact_ids),
        ):
            contact_ids.add(r[0])
    subject.contacts |= contact_ids
    subject.emails |= emails
    ids = sorted(subject.contacts)
    for r in await conn.fetch(
        "SELECT kind, value FROM identities WHERE contact_id = ANY($1::text[])", ids
    ):
        subject.identities.add((r["kind"], r["value"]))
        if r["kind"] == "email":
            subject.emails.add(r["value"].lower())
    for r in await conn.fetch(
        "SELECT lower(email) AS email FROM contacts WHERE contact_id = ANY($1::text[]) "
        "UNION SELECT lower(changes ->> 'email') FROM contact_history "
        "WHERE contact_id = ANY($1::text[])",
        ids,
    ):
        if r["email"]:
            subject.emails.add(r["email"])


async def _account_subject(conn: asyncpg.Connection, account_id: str, subject: Subject) -> None:
    account_id = await identities.survivor(conn, "account", account_id)
    accounts = {account_id}
    for r in await conn.fetch(
        "SELECT merged_id FROM merged_ids WHERE subject = 'account' AND survivor_id = $1",
        account_id,
    ):
        accounts.add(r[0])
    subject.accounts |= accounts
    for r in await conn.fetch(
        "SELECT kind, value FROM account_identities WHERE account_id = ANY($1::text[])",
        sorted(accounts),
    ):
        subject.identities.add((r["kind"], r["value"]))
    # Its people are its contacts now: one who has moved to another account is that account's
    # (what was sent about this account while they were here goes with the account's events).
    contacts = {
        r[0]
        for r in await conn.fetch(
            "SELECT contact_id FROM contacts WHERE account_id = ANY($1::text[])", sorted(accounts)
        )
    }
    await _contacts_subject(conn, contacts, set(), subject)


# Where copies may sit: (table, key columns, JSON columns, text columns, what to do with a row
# holding one: delete it, forget its payload, or redact the marker in it).
_COPIES: tuple[tuple[str, tuple[str, ...], tuple[str, ...], tuple[str, ...], str], ...] = (
    ("unresolved_signals", ("id",), ("message", "to_jsonb(keys)"), (), "delete"),
    ("findings", ("id",), ("details",), ("account_id",), "delete"),
    ("insights", ("insight_id",), ("reasons", "details", "decision"), ("account_id",), "delete"),
    ("deliveries", ("delivery_id",), ("payload",), (), "delete"),
    ("delivery_attempts", ("id",), (), ("response", "error"), "delete"),
    ("source_deliveries", ("source_id", "delivery_id"), ("payload",), ("reason",), "forget"),
    ("audit_log", ("id",), ("details",), ("target",), "redact"),
    ("jobs", ("job_id",), ("params", "result"), ("error",), "redact"),
    ("accounts", ("account_id",), ("traits",), ("name",), "redact"),
    ("account_history", ("id",), ("changes",), (), "redact"),
    ("contacts", ("contact_id",), ("traits",), ("name",), "redact"),
    ("contact_history", ("id",), ("changes",), ("account_id",), "redact"),
    ("outcomes", ("outcome_id",), ("properties",), (), "redact"),
)
_OWNERS = (("accounts", "owner_email"), ("insights", "owner_email"), ("routing_rules", "owner"))
# A JSON document holds a marker where a string (or a number: senders' numeric ids) anywhere
# in it is one, or contains one of the emails ($2).
_JSON_HOLDS = """EXISTS (SELECT 1 FROM unnest($1::text[]) m
    WHERE strpos({c}::text, m) > 0
      AND jsonb_path_exists({c}, '$.** ? (@ == $m || @ == $n)', jsonb_build_object('m', m,
          'n', CASE WHEN m ~ '^-?[0-9]{{1,18}}$' THEN to_jsonb(m::numeric) ELSE to_jsonb(m) END)))
  OR EXISTS (SELECT 1 FROM unnest($2::text[]) m WHERE strpos(lower({c}::text), m) > 0)"""
_TEXT_HOLDS = """{c} = ANY($1::text[])
  OR EXISTS (SELECT 1 FROM unnest($2::text[]) m WHERE strpos(lower({c}), m) > 0)"""


def _holding(json_columns: Sequence[str], text_columns: Sequence[str]) -> str:
    """SQL: a row one of whose columns holds one of the markers ($1 exact, $2 emails)."""
    parts = [f"({_JSON_HOLDS.format(c=c)})" for c in json_columns]
    parts += [f"({_TEXT_HOLDS.format(c=c)})" for c in text_columns]
    return " OR ".join(parts)


def _redact(value: Any, exact: set[str], emails: Sequence[str], token: str) -> Any:
    """The value with every string (or number) that is a marker, and every email in a string,
    replaced by the token."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        return token if str(value) in exact else value
    if isinstance(value, str):
        if value in exact:
            return token
        lowered = value.lower()
        for email in emails:
            while email in lowered:
                at = lowered.index(email)
                value = value[:at] + token + value[at + len(email) :]
                lowered = value.lower()
        return value
    if isinstance(value, list):
        return [_redact(v, exact, emails, token) for v in value]
    if isinstance(value, dict):
        return {
            _redact(k, exact, emails, token): _redact(v, exact, emails, token)
            for k, v in value.items()
        }
    return value


async def _copies(
    conn: asyncpg.Connection, subject: Subject, token: str, counts: dict[str, int]
) -> None:
    exact, emails = subject.markers(), sorted(subject.emails)
    if not exact:
        return
    marks = set(exact)
    for table, keys, json_columns, text_columns, action in _COPIES:
        where = _holding(json_columns, text_columns)
        if action == "delete":
            done = await conn.execute(f"DELETE FROM {table} WHERE {where}", exact, emails)  # noqa: S608  (constant names)
            counts[table] = counts.get(table, 0) + int(done.split()[-1])
            continue
        if action == "forget":
            done = await conn.execute(
                f"UPDATE {table} SET payload = NULL, reason = NULL WHERE {where}",  # noqa: S608  (constant names)
                exact,
                emails,
            )
            counts[f"{table}_payloads"] = int(done.split()[-1])
            continue
        columns = [*json_columns, *text_columns]
        rows = await conn.fetch(
            f"SELECT {', '.join(keys)}, {', '.join(columns)} FROM {table} WHERE {where}",  # noqa: S608  (constant names)
            exact,
            emails,
        )
        for row in rows:
            values: list[Any] = [row[k] for k in keys]
            sets = []
            for c in columns:
                raw = row[c]
                if raw is None:
                    continue
                decoded = orjson.loads(raw) if c in json_columns else raw
                new = _redact(decoded, marks, emails, token)
                if new != decoded:
                    values.append(orjson.dumps(new).decode() if c in json_columns else new)
                    sets.append(f"{c} = ${len(values)}{'::jsonb' if c in json_columns else ''}")
            if sets:
                match = " AND ".join(f"{k} = ${n + 1}" for n, k in enumerate(keys))
                await conn.execute(f"UPDATE {table} SET {', '.join(sets)} WHERE {match}", *values)  # noqa: S608  (constant names)
        counts[f"{table}_redacted"] = len(rows)
    # Other people's events anywhere (a person's events may be sent to any account): a marker in
    # their text or properties is redacted. A scan of every partition, as an erasure is rare.
    rows = await conn.fetch(
        "SELECT event_id, occurred_at, text, properties FROM events "  # noqa: S608  (constant names)
        f"WHERE {_holding(('properties',), ('text',))}",
        exact,
        emails,
    )
    for r in rows:
        await conn.execute(
            "UPDATE events SET text = $3, properties = $4::jsonb "
            "WHERE event_id = $1 AND occurred_at = $2",
            r["event_id"],
            r["occurred_at"],
            _redact(r["text"], marks, emails, token),
            orjson.dumps(_redact(orjson.loads(r["properties"]), marks, emails, token)).decode(),
        )
    counts["events_redacted"] = len(rows)
    # Where a whole column names a person (an account's or an insight's owner, the owner a rule
    # assigns), the value is emptied: an insight then goes to the account's owner.
    for table, column in _OWNERS:
        done = await conn.execute(
            f"UPDATE {table} SET {column} = NULL WHERE lower({column}) = ANY($1::text[])",  # noqa: S608  (constant names)
            emails,
        )
        counts[f"{table}_{column}"] = int(done.split()[-1])


# A subject's events, wherever they were sent (any account: a person's events may name another
# account than their own): everything sent about its accounts, by its contacts, or with one of
# its emails ($1 accounts, $2 contacts, $3 emails). No index serves the last two: a scan, as
# erasures and exports are rare and ingest would pay for an index on every event.
_SUBJECTS_EVENTS = """e.account_id = ANY($1::text[]) OR e.contact_id = ANY($2::text[])
    OR lower(e.email) = ANY($3::text[])"""


async def _erase(conn: asyncpg.Connection, subject: Subject, token: str) -> dict[str, int]:
    counts: dict[str, int] = {}

    async def run(name: str, sql: str, *args: Any) -> None:
        done = await conn.execute(sql, *args)
        counts[name] = counts.get(name, 0) + int(done.split()[-1])

    contacts, emails = sorted(subject.contacts), sorted(subject.emails)
    accounts = sorted(subject.accounts)
    subject.events |= {
        r[0]
        for r in await conn.fetch(
            f"SELECT event_id FROM events e WHERE {_SUBJECTS_EVENTS}",  # noqa: S608  (constant text)
            accounts,
            contacts,
            emails,
        )
    }
    events = sorted(subject.events)
    await run(
        "text_enrichments", "DELETE FROM text_enrichments WHERE event_id = ANY($1::text[])", events
    )
    await run("event_keys", "DELETE FROM event_keys WHERE event_id = ANY($1::text[])", events)
    await run("events", "DELETE FROM events WHERE event_id = ANY($1::text[])", events)
    await run("identities", "DELETE FROM identities WHERE contact_id = ANY($1::text[])", contacts)
    await run(
        "contact_history",
        "DELETE FROM contact_history WHERE contact_id = ANY($1::text[])",
        contacts,
    )
    await run(
        "merged_ids",
        "DELETE FROM merged_ids WHERE (subject = 'contact' AND (merged_id = ANY($1::text[]) "
        "OR survivor_id = ANY($1::text[]))) OR (subject = 'account' AND "
        "(merged_id = ANY($2::text[]) OR survivor_id = ANY($2::text[])))",
        contacts,
        accounts,
    )
    await run("contacts", "DELETE FROM contacts WHERE contact_id = ANY($1::text[])", contacts)
    if accounts:
        for table in (
            "outcomes",
            "scores",
            "latest_scores",
            "uplift_scores",
            "event_rollups",
            "account_history",
            "account_identities",
            "insights",
            "findings",
            "unresolved_signals",
        ):
            await run(table, f"DELETE FROM {table} WHERE account_id = ANY($1::text[])", accounts)  # noqa: S608  (constant names)
        await run("accounts", "DELETE FROM accounts WHERE account_id = ANY($1::text[])", accounts)
    await _copies(conn, subject, token, counts)
    # Deliveries of insights gone, and their attempts.
    await run(
        "deliveries",
        "DELETE FROM deliveries d "
        "WHERE NOT EXISTS (SELECT 1 FROM insights i WHERE i.insight_id = d.insight_id)",
    )
    await run(
        "delivery_attempts",
        "DELETE FROM delivery_attempts a "
        "WHERE NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.delivery_id = a.delivery_id)",
    )
    return {k: v for k, v in counts.items() if v}


def handler(settings: Settings) -> jobs.Handler:
    """The `privacy_erasure` job: erase, suppress, audit by hash, and forget the subject."""

    async def erase(
        conn: asyncpg.Connection, params: JSONObject, progress: jobs.Progress
    ) -> JSONObject:
        kind, value, subject_hash = params.get("kind"), params.get("value"), params["hash"]
        if value is None:  # finished before, parameters forgotten
            raise errors.InvalidPayload("This erasure has run already.")
        subject = Subject()
        async with conn.transaction():
            if kind == "account":
                await _account_subject(conn, value, subject)
            elif kind == "contact":
                survivor = await identities.survivor(conn, "contact", value)
                await _contacts_subject(conn, {value, survivor}, set(), subject)
            else:
                await _contacts_subject(conn, set(), {value}, subject)
            token = f"{ERASED[:-1]} {subject_hash[:12]}]"
            counts = await _erase(conn, subject, token)
            hashes = await suppress(conn, settings, subject.names(), erasure_id=subject_hash)
            result = {"removed": counts, "suppressed": len(hashes), "subject": subject_hash}
            await audit.record(
                conn,
                actor="privacy",
                action="privacy.erased",
                target=subject_hash,
                details={"kind": kind, **result},
            )
            # The job keeps only the hash of whom it erased.
            await conn.execute(
                "UPDATE jobs SET params = $3::jsonb WHERE kind = $1 AND params ->> 'hash' = $2",
                JOB,
                subject_hash,
                orjson.dumps({"kind": kind, "hash": subject_hash}).decode(),
            )
        return result

    return erase


# --- export --------------------------------------------------------------------------------------

EXPORT_BATCH = 1_000  # rows fetched at a time: an account's million events never sit in memory


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    return str(value)


def _json(value: Any) -> bytes:
    return orjson.dumps(value, default=_plain)


async def _rows(conn: asyncpg.Connection, query: str, *args: Any) -> Any:
    """Rows of a query as JSON objects, fetched a batch at a time (a server-side cursor)."""
    async for row in conn.cursor(query, *args, prefetch=EXPORT_BATCH):
        yield {
            k: orjson.loads(v) if isinstance(v, str) and k in _JSON_COLUMNS else v
            for k, v in row.items()
        }


_JSON_COLUMNS = {"traits", "consent", "changes", "properties", "reasons", "details", "decision"}


async def exported(
    conn: asyncpg.Connection,
    *,
    contact_id: str | None,
    email: str | None,
    account_id: str | None,
) -> Subject:
    """Whom an export is of; NotFound when nothing is held about them."""
    subject = Subject()
    if account_id is not None:
        await _account_subject(conn, account_id, subject)
        exists = await conn.fetchval(
            "SELECT count(*) FROM accounts WHERE account_id = ANY($1::text[])",
            sorted(subject.accounts),
        )
    else:
        if contact_id is not None:
            survivor = await identities.survivor(conn, "contact", contact_id)
            await _contacts_subject(conn, {contact_id, survivor}, set(), subject)
        else:
            assert email is not None
            await _contacts_subject(conn, set(), {email}, subject)
        exists = await conn.fetchval(
            "SELECT count(*) FROM contacts WHERE contact_id = ANY($1::text[])",
            sorted(subject.contacts),
        )
    if not exists:
        raise errors.NotFound("Nothing is held about this subject.")
    return subject


_PROFILE = {  # per kind: the profiles, one's history, one's identities
    "account": (
        "SELECT * FROM accounts WHERE account_id = ANY($1::text[])",
        "SELECT observed_at, changes, recorded_at FROM account_history "
        "WHERE account_id = $1 ORDER BY observed_at, id",
        "SELECT kind, value FROM account_identities WHERE account_id = $1 ORDER BY kind, value",
    ),
    "contact": (
        "SELECT * FROM contacts WHERE contact_id = ANY($1::text[])",
        "SELECT account_id, observed_at, changes, recorded_at FROM contact_history "
        "WHERE contact_id = $1 ORDER BY observed_at, id",
        "SELECT kind, value FROM identities WHERE contact_id = $1 ORDER BY kind, value",
    ),
}
_EXPORT_EVENTS = """
    SELECT e.event_id, e.occurred_at, e.account_id, e.contact_id, e.email, e.type, e.source,
           e.value, e.properties, e.text, e.received_at,
           x.sentiment, x.label AS sentiment_label, x.themes
    FROM events e LEFT JOIN text_enrichments x ON x.event_id = e.event_id
    WHERE e.account_id = ANY($1::text[]) OR e.contact_id = ANY($2::text[])
      OR lower(e.email) = ANY($3::text[])
    ORDER BY e.occurred_at, e.event_id"""  # the subject's events (_SUBJECTS_EVENTS)
_EXPORT_OUTCOMES = """
    SELECT outcome_id, account_id, kind, occurred_at, amount, properties, received_at
    FROM outcomes WHERE account_id = ANY($1::text[]) ORDER BY occurred_at"""
_EXPORT_SCORES = """
    SELECT account_id, target, model_id, segment, as_of, scored_at, probability, band,
           percentile, reasons
    FROM scores WHERE account_id = ANY($1::text[]) ORDER BY as_of, id"""
_EXPORT_INSIGHTS = """
    SELECT insight_id, kind, target, account_id, owner_email, probability, band, reasons,
           next_step, details, status, note, created_at
    FROM insights
    WHERE account_id = ANY($1::text[]) OR details ->> 'event_id' = ANY($2::text[])
    ORDER BY created_at"""


async def _profiles(conn: asyncpg.Connection, kind: str, ids: list[str]) -> Any:
    select, history, held = _PROFILE[kind]
    async for profile in _rows(conn, select, ids):
        key = profile[f"{kind}_id"]
        profile["history"] = [h async for h in _rows(conn, history, key)]
        profile["identities"] = [dict(r) for r in await conn.fetch(held, key)]
        yield profile


async def export(conn: asyncpg.Connection, subject: Subject) -> Any:
    """Everything held about a subject, as one JSON document, in pieces (bytes): profiles with
    their history and identities, events with their text, sentiment and themes, and for an
    account its outcomes, scores with their reasons and insights; for a person the insights
    that quote them. Inside one repeatable-read transaction, so the document is one moment's."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        accounts, contacts = sorted(subject.accounts), sorted(subject.contacts)
        emails = sorted(subject.emails)
        events = [
            r[0]
            for r in await conn.fetch(
                f"SELECT event_id FROM events e WHERE {_SUBJECTS_EVENTS}",  # noqa: S608  (constant text)
                accounts,
                contacts,
                emails,
            )
        ]
        sections = (
            ("accounts", _profiles(conn, "account", accounts)),
            ("contacts", _profiles(conn, "contact", contacts)),
            ("events", _rows(conn, _EXPORT_EVENTS, accounts, contacts, emails)),
            ("outcomes", _rows(conn, _EXPORT_OUTCOMES, accounts)),
            ("scores", _rows(conn, _EXPORT_SCORES, accounts)),
            ("insights", _rows(conn, _EXPORT_INSIGHTS, accounts, events)),
        )
        yield b'{"exported_at":' + _json(await conn.fetchval("SELECT now()"))
        for name, items in sections:
            yield f',"{name}":['.encode()
            first = True
            async for item in items:
                yield (b"" if first else b",") + _json(item)
                first = False
            yield b"]"
        yield b"}"
