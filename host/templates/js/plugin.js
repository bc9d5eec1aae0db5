// {{name}}: records each event it receives once, and answers how many events one
// subject has had. Change it into your plugin: subscriptions, tables, handler, reads.
// A `result` error is returned by throwing its value; a failed `db` call throws an
// error whose `payload` is the `db-error` record.

import { execute, query } from "eventhost:plugin/db@0.1.0";

const text = (val) => ({ tag: "text", val });

export const handler = {
  subscriptions() {
    return ["#"];
  },

  // Effects must be idempotent: the same event may arrive twice.
  handle(event) {
    try {
      execute(
        "INSERT INTO events_seen (source, event_id, event_type, subject) VALUES ($1, $2, $3, $4)" +
          " ON CONFLICT (source, event_id) DO NOTHING",
        [text(event.source), text(event.id), text(event.type), text(event.subject)],
      );
    } catch (err) {
      const e = err.payload || { code: "", message: String(err) };
      // Data, constraint, syntax and limit errors fail the same way every time.
      const permanent = ["22", "23", "42", "54"].some((c) => e.code.startsWith(c));
      throw { tag: permanent ? "permanent" : "retryable", val: `database error ${e.code}: ${e.message}` };
    }
  },
};

export const migrations = {
  migrations() {
    return [
      {
        version: 1,
        name: "events_seen",
        sql: `CREATE TABLE events_seen (
                source     text NOT NULL,
                event_id   text NOT NULL,
                event_type text NOT NULL,
                subject    text NOT NULL,
                seen_at    timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (source, event_id)
              )`,
      },
    ];
  },
};

export const reader = {
  // `GET subjects/{subject}`: how many events that subject has had.
  read(request) {
    const segments = request.path.replace(/^\/+|\/+$/g, "").split("/");
    if (segments.length !== 2 || segments[0] !== "subjects") {
      return reply(404, { error: `no route for ${request.method} ${request.path}` });
    }
    try {
      const rows = query("SELECT count(*)::int AS events FROM events_seen WHERE subject = $1", [
        text(segments[1]),
      ]);
      return reply(200, { subject: segments[1], events: rows.rows[0][0].val });
    } catch (err) {
      const e = err.payload || { code: "", message: String(err) };
      return reply(500, { error: `database error ${e.code}: ${e.message}` });
    }
  },
};

function reply(status, body) {
  return {
    status,
    headers: [["content-type", "application/json"]],
    body: new TextEncoder().encode(JSON.stringify(body)),
  };
}
