"""The `contact` and `event` namespaces of the iVvy API, in miniature, as batchgate Python actions.

    batchgate serve --app examples.ivvy_events.app:app      (from the repository root)

Each action declares its parameters in its signature: batchgate validates a call's params against
them before the handler runs (a missing one is 400/23017, a wrong one 400/23016) and serves the
action both as a direct call (`POST /api/1.0/event?action=inviteContacts`) and as a batch job.
The handlers are plain functions doing blocking SQLite work; batchgate runs them in a thread pool.
Answers follow the shapes of the public API's documentation.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sqlite3
import zoneinfo
from typing import Annotated, Any, Literal

import msgspec

from batchgate import ActionContext, App, NotFound, invalid_param, missing_param

from . import db

# Where the invitation links in inviteContacts' answers point.
LINK_BASE = os.environ.get("IVVY_EVENTS_LINK_BASE", "https://events.example.com")

Email = Annotated[str, msgspec.Meta(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
Title = Annotated[str, msgspec.Meta(min_length=1, max_length=140)]
Timestamp = Annotated[str, msgspec.Meta(pattern=r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}( UTC)?$")]
EmailStatus = Literal[1, 2, 3, 5]  # subscribed, unsubscribed, bounced, no marketing
SmsStatus = Literal[1, 2, 3, 4]  # subscribed, unsubscribed, failed, no marketing
RECORD_EVENT_DETAILS = 12  # the only event type the public API lets you add

app = App()


async def _create_tables() -> None:
    await asyncio.to_thread(db.create_tables)


app.on_startup.append(_create_tables)


# contact ---------------------------------------------------------------------------------------


@app.action("contact", "addOrUpdateContact")
def add_or_update_contact(
    ctx: ActionContext,
    id: int | None = None,
    firstName: Name | None = None,
    lastName: Name | None = None,
    email: Email | None = None,
    phone: str | None = None,
    externalId: str | None = None,
    status: EmailStatus | None = None,
    smsStatus: SmsStatus | None = None,
) -> dict[str, Any]:
    """Adds a contact, or updates the one `id` names with the fields given."""
    fields = {
        "first_name": firstName,
        "last_name": lastName,
        "email": email,
        "phone": phone,
        "external_id": externalId,
        "status": status,
        "sms_status": smsStatus,
    }
    with db.connect(write=True) as conn:
        if id is None:
            return db.once(conn, ctx.account, ctx.idempotency_key, lambda: _add_contact(conn, ctx, fields))
        return _update(conn, "contacts", ctx.account, id, fields)


def _add_contact(conn: sqlite3.Connection, ctx: ActionContext, fields: dict[str, Any]) -> dict[str, Any]:
    for param, column in (("firstName", "first_name"), ("lastName", "last_name"), ("email", "email")):
        if fields[column] is None:
            raise missing_param(param)  # required when adding, so not declared as required above
    cursor = conn.execute(
        "INSERT INTO contacts (account, first_name, last_name, email, phone, external_id,"
        " status, sms_status, modified_at)"
        " VALUES (:account, :first_name, :last_name, :email, :phone, :external_id,"
        " coalesce(:status, 1), coalesce(:sms_status, 1), :now)",
        {**fields, "account": ctx.account, "now": db.now()},
    )
    return {"success": True, "id": cursor.lastrowid}


@app.action("contact", "getContact", read_only=True)
def get_contact(ctx: ActionContext, id: int) -> dict[str, Any]:
    with db.connect() as conn:
        row = _row(conn, "contacts", ctx.account, id)
        invitations = conn.execute(
            "SELECT event_id, invited_at FROM invitations WHERE contact_id = ? ORDER BY event_id", (id,)
        ).fetchall()
    return {
        "id": row["id"],
        "firstName": row["first_name"],
        "lastName": row["last_name"],
        "email": row["email"],
        "phone": row["phone"],
        "status": row["status"],
        "smsStatus": row["sms_status"],
        "customFields": [],
        "groups": [],
        "companies": [],
        "companiesData": [],
        "externalId": row["external_id"],
        "modifiedDate": row["modified_at"],
        "isAnonymised": False,
        "eventInvitations": [{"eventId": i["event_id"], "invitedDate": i["invited_at"]} for i in invitations],
        "eventRegistrations": [],
    }


# event -----------------------------------------------------------------------------------------


@app.action("event", "addOrUpdateEvent")
def add_or_update_event(
    ctx: ActionContext,
    id: int | None = None,
    eventType: Literal[12, "12"] | None = None,
    title: Title | None = None,
    timezone: str | None = None,
    startDateTime: Timestamp | None = None,
    endDateTime: Timestamp | None = None,
    capacity: Annotated[int, msgspec.Meta(ge=0)] | None = None,
    budget: float | None = None,
) -> dict[str, Any]:
    """Adds an event ("Record Event Details", type 12), or updates the one `id` names."""
    if timezone is not None:
        _check_timezone(timezone)
    fields = {
        "title": title,
        "timezone": timezone,
        "start_date_time": _utc(startDateTime),
        "end_date_time": _utc(endDateTime),
        "capacity": capacity,
        "budget": budget,
    }
    with db.connect(write=True) as conn:
        if id is None:
            adding = {**fields, "event_type": eventType}
            return db.once(conn, ctx.account, ctx.idempotency_key, lambda: _add_event(conn, ctx, adding))
        answer = _update(conn, "events", ctx.account, id, fields)
        _check_dates(_row(conn, "events", ctx.account, id))
        return {**answer, "code": _row(conn, "events", ctx.account, id)["code"]}


def _add_event(conn: sqlite3.Connection, ctx: ActionContext, fields: dict[str, Any]) -> dict[str, Any]:
    for param, column in (("eventType", "event_type"), ("title", "title"), ("timezone", "timezone")):
        if fields[column] is None:
            raise missing_param(param)
    _check_dates(fields)
    cursor = conn.execute(
        "INSERT INTO events (account, event_type, title, timezone, start_date_time, end_date_time,"
        " capacity, budget, modified_at)"
        " VALUES (:account, 12, :title, :timezone, :start_date_time, :end_date_time,"
        " coalesce(:capacity, 0), :budget, :now)",
        {**fields, "account": ctx.account, "now": db.now()},
    )
    code = f"EV{cursor.lastrowid:05d}"
    conn.execute("UPDATE events SET code = ? WHERE id = ?", (code, cursor.lastrowid))
    return {"success": True, "id": cursor.lastrowid, "code": code}


@app.action("event", "getEvent", read_only=True)
def get_event(ctx: ActionContext, id: int) -> dict[str, Any]:
    with db.connect() as conn:
        row = _row(conn, "events", ctx.account, id)
    return {
        "id": row["id"],
        "code": row["code"],
        "eventType": row["event_type"],
        "title": row["title"],
        "timezone": row["timezone"],
        "capacity": row["capacity"],
        "domainName": None,
        "startDateTime": row["start_date_time"],
        "endDateTime": row["end_date_time"],
        "numRegistered": 0,
        "currentStatus": 1,
        "websiteUrl": f"{LINK_BASE}/event/{row['code']}/",
        "eventTags": [],
    }


@app.action("event", "inviteContacts")
def invite_contacts(ctx: ActionContext, event: int, contacts: list[int]) -> dict[str, Any]:
    """Invites each contact; one that does not exist gets `status: false` and no links.

    Inviting a contact again answers the same links: the invitation is made once.
    """
    with db.connect(write=True) as conn:
        row = conn.execute(
            "SELECT code FROM events WHERE id = ? AND account = ?", (event, ctx.account)
        ).fetchone()
        if row is None:
            raise invalid_param("event", f"there is no event {event}")
        return {"results": [_invite(conn, ctx, event, row["code"], contact) for contact in contacts]}


def _invite(
    conn: sqlite3.Connection, ctx: ActionContext, event: int, code: str, contact: int
) -> dict[str, Any]:
    if (
        conn.execute("SELECT 1 FROM contacts WHERE id = ? AND account = ?", (contact, ctx.account)).fetchone()
        is None
    ):
        return {"contact": contact, "status": False}
    conn.execute(
        "INSERT OR IGNORE INTO invitations (event_id, contact_id, token, invited_at) VALUES (?, ?, ?, ?)",
        (event, contact, secrets.token_urlsafe(12), db.now()),
    )
    token = conn.execute(
        "SELECT token FROM invitations WHERE event_id = ? AND contact_id = ?", (event, contact)
    ).fetchone()["token"]
    link = f"{LINK_BASE}/event/{code}/invitation/{token}"
    return {
        "contact": contact,
        "status": True,
        "inviteLinkYes": f"{link}?response=yes",
        "inviteLinkNo": f"{link}?response=no",
    }


# shared ----------------------------------------------------------------------------------------

_TABLES = {"contacts": "contact", "events": "event"}
_SELECT = {table: f"SELECT * FROM {table} WHERE id = ? AND account = ?" for table in _TABLES}  # noqa: S608 (fixed names)
_COLUMNS = {
    "contacts": ("first_name", "last_name", "email", "phone", "external_id", "status", "sms_status"),
    "events": ("title", "timezone", "start_date_time", "end_date_time", "capacity", "budget"),
}
_UPDATE = {
    table: f"UPDATE {table} SET {', '.join(f'{c} = :{c}' for c in columns)}, modified_at = :now"  # noqa: S608
    " WHERE id = :id AND account = :account"
    for table, columns in _COLUMNS.items()
}


def _row(conn: sqlite3.Connection, table: str, account: str, id: int) -> sqlite3.Row:
    row: sqlite3.Row | None = conn.execute(_SELECT[table], (id, account)).fetchone()
    if row is None:
        raise NotFound(f"There is no {_TABLES[table]} {id}")
    return row


def _update(
    conn: sqlite3.Connection, table: str, account: str, id: int, fields: dict[str, Any]
) -> dict[str, Any]:
    """Changes the fields given (not None) of one row; the public API's answer to an update."""
    row = conn.execute(_SELECT[table], (id, account)).fetchone()
    if row is None:
        return {"success": False, "id": None, "message": f"There is no {_TABLES[table]} {id}"}
    merged = {column: row[column] if fields[column] is None else fields[column] for column in _COLUMNS[table]}
    conn.execute(_UPDATE[table], {**merged, "id": id, "account": account, "now": db.now()})
    return {"success": True, "id": id}


def _check_timezone(name: str) -> None:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise invalid_param("timezone", f"{name!r} is not a known time zone") from None


def _utc(timestamp: str | None) -> str | None:
    """The API reads timestamps with or without " UTC" and answers with it."""
    return None if timestamp is None else timestamp.removesuffix(" UTC") + " UTC"


def _check_dates(fields: dict[str, Any] | sqlite3.Row) -> None:
    start, end = fields["start_date_time"], fields["end_date_time"]
    if start and end and end < start:  # same fixed-width form, so text order is time order
        raise invalid_param("endDateTime", "must be on or after startDateTime")
