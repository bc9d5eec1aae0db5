"""audit-log in Python: the same plugin as plugins/audit-log (Rust), table for table.

Built with componentize-py (see scripts/build-guests.sh); `wit_world` is the binding
package componentize-py generates from ../../wit.
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports.migrations import Migration
from wit_world.exports.reader import Request, Response
from wit_world.imports import db
from wit_world.imports.types import Event, HandlerError_Permanent, HandlerError_Retryable

SCHEMA = """
CREATE TABLE audit_events (
    seq            bigserial PRIMARY KEY,
    event_id       uuid NOT NULL UNIQUE,
    event_type     text NOT NULL,
    source         text NOT NULL,
    aggregate_type text NOT NULL,
    aggregate_id   text NOT NULL,
    schema_version integer NOT NULL,
    occurred_at    timestamptz NOT NULL,
    payload        jsonb NOT NULL,
    headers        jsonb NOT NULL,
    recorded_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_events_by_aggregate ON audit_events (aggregate_type, aggregate_id, occurred_at, seq);
"""

# CloudEvents ids are any string, unique together with the source.
ANY_EVENT_ID = """
ALTER TABLE audit_events ALTER COLUMN event_id TYPE text;
ALTER TABLE audit_events DROP CONSTRAINT audit_events_event_id_key;
ALTER TABLE audit_events ADD CONSTRAINT audit_events_source_event_id_key UNIQUE (source, event_id);
"""

INSERT = """
INSERT INTO audit_events (event_id, event_type, source, aggregate_type, aggregate_id,
                          schema_version, occurred_at, payload, headers)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (source, event_id) DO NOTHING
"""

LIST = """
SELECT event_id, event_type, source, schema_version, occurred_at, payload, headers, recorded_at
FROM audit_events WHERE aggregate_type = $1 AND aggregate_id = $2
ORDER BY occurred_at, seq
"""


def handler_error(err: db.DbError):
    """Data, constraint, syntax and limit errors (SQLSTATE classes 22, 23, 42, 54) can
    never succeed (the same rule as the Rust kit's)."""
    reason = f"database error {err.code}: {err.message}"
    if err.code.startswith(("22", "23", "42", "54")):
        return Err(HandlerError_Permanent(reason))
    return Err(HandlerError_Retryable(reason))


class Handler(exports.Handler):
    def subscriptions(self) -> list[str]:
        return ["#"]

    def handle(self, event: Event) -> None:
        headers = {name: value for name, value in event.headers}
        try:
            db.execute(INSERT, [
                db.Value_Text(event.id),
                db.Value_Text(event.type),
                db.Value_Text(event.source),
                db.Value_Text(event.aggregate_type),
                db.Value_Text(event.subject),
                db.Value_Int32(event.schema_version),
                db.Value_Timestamp(event.time),
                db.Value_Json(event.data),
                db.Value_Json(json.dumps(headers)),
            ])
        except Err as e:
            raise handler_error(e.value)


class Migrations(exports.Migrations):
    def migrations(self) -> list[Migration]:
        return [
            Migration(version=1, name="audit_events", sql=SCHEMA),
            Migration(version=2, name="any_event_id", sql=ANY_EVENT_ID),
        ]


class Reader(exports.Reader):
    def read(self, request: Request) -> Response:
        """`GET events/{aggregate_type}/{aggregate_id}`: that aggregate's events, oldest first."""
        segments = request.path.strip("/").split("/")
        if request.method in ("GET", "HEAD") and len(segments) == 3 and segments[0] == "events":
            return list_events(segments[1], segments[2])
        return reply(404, {"error": f"no route for {request.method} {request.path}"})


def list_events(aggregate_type: str, aggregate_id: str) -> Response:
    try:
        rows = db.query(LIST, [db.Value_Text(aggregate_type), db.Value_Text(aggregate_id)])
    except Err as e:
        return reply(500, {"error": f"{e.value.code} {e.value.message}"})
    events = [
        {name: to_json(cell) for name, cell in zip(rows.columns, row)} for row in rows.rows
    ]
    return reply(200, {"aggregateType": aggregate_type, "aggregateId": aggregate_id, "events": events})


def to_json(cell: db.Value):
    if isinstance(cell, db.Value_Null):
        return None
    if isinstance(cell, db.Value_Json):
        try:
            return json.loads(cell.value)
        except ValueError:
            return cell.value
    if isinstance(cell, db.Value_Bytes):
        return list(cell.value)
    return cell.value


def reply(status: int, body) -> Response:
    return Response(
        status=status,
        headers=[("content-type", "application/json")],
        body=json.dumps(body).encode(),
    )
