"""{{name}}: records each event it receives once, and answers how many events one
subject has had. Change it into your plugin: subscriptions, tables, handler, reads.

`wit_world` is the binding package componentize-py generates from ./wit."""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports.migrations import Migration
from wit_world.exports.reader import Request, Response
from wit_world.imports import db
from wit_world.imports.types import Event, HandlerError_Permanent, HandlerError_Retryable

SCHEMA = """
CREATE TABLE events_seen (
    source     text NOT NULL,
    event_id   text NOT NULL,
    event_type text NOT NULL,
    subject    text NOT NULL,
    seen_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, event_id)
)
"""


class Handler(exports.Handler):
    def subscriptions(self) -> list[str]:
        return ["#"]

    def handle(self, event: Event) -> None:
        """Effects must be idempotent: the same event may arrive twice."""
        try:
            db.execute(
                "INSERT INTO events_seen (source, event_id, event_type, subject)"
                " VALUES ($1, $2, $3, $4) ON CONFLICT (source, event_id) DO NOTHING",
                [db.Value_Text(event.source), db.Value_Text(event.id),
                 db.Value_Text(event.type), db.Value_Text(event.subject)],
            )
        except Err as e:
            # Data, constraint, syntax and limit errors fail the same way every time.
            reason = f"database error {e.value.code}: {e.value.message}"
            if e.value.code.startswith(("22", "23", "42", "54")):
                raise Err(HandlerError_Permanent(reason))
            raise Err(HandlerError_Retryable(reason))


class Migrations(exports.Migrations):
    def migrations(self) -> list[Migration]:
        return [Migration(version=1, name="events_seen", sql=SCHEMA)]


class Reader(exports.Reader):
    def read(self, request: Request) -> Response:
        """`GET subjects/{subject}`: how many events that subject has had."""
        segments = request.path.strip("/").split("/")
        if len(segments) != 2 or segments[0] != "subjects":
            return reply(404, {"error": f"no route for {request.method} {request.path}"})
        try:
            rows = db.query(
                "SELECT count(*)::int AS events FROM events_seen WHERE subject = $1",
                [db.Value_Text(segments[1])],
            )
        except Err as e:
            return reply(500, {"error": f"database error {e.value.code}: {e.value.message}"})
        return reply(200, {"subject": segments[1], "events": rows.rows[0][0].value})


def reply(status: int, body) -> Response:
    return Response(status=status, headers=[("content-type", "application/json")], body=json.dumps(body).encode())
