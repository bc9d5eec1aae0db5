// audit-log in JavaScript: the same plugin as plugins/audit-log (Rust), table for table.
// Built with componentize-js (see scripts/build-guests.sh). A `result` error is returned
// by throwing its value; an imported function's error arrives as a thrown error whose
// `payload` is the `db-error` record.

import { execute, query } from "eventhost:plugin/db@0.1.0";

const SCHEMA = `
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
`;

// CloudEvents ids are any string, unique together with the source.
const ANY_EVENT_ID = `
ALTER TABLE audit_events ALTER COLUMN event_id TYPE text;
ALTER TABLE audit_events DROP CONSTRAINT audit_events_event_id_key;
ALTER TABLE audit_events ADD CONSTRAINT audit_events_source_event_id_key UNIQUE (source, event_id);
`;

const INSERT = `
INSERT INTO audit_events (event_id, event_type, source, aggregate_type, aggregate_id,
                          schema_version, occurred_at, payload, headers)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (source, event_id) DO NOTHING
`;

const LIST = `
SELECT event_id, event_type, source, schema_version, occurred_at, payload, headers, recorded_at
FROM audit_events WHERE aggregate_type = $1 AND aggregate_id = $2
ORDER BY occurred_at, seq
`;

const text = (val) => ({ tag: "text", val });

// Data, constraint, syntax and limit errors (SQLSTATE classes 22, 23, 42, 54) can never
// succeed (the same rule as the Rust kit's).
function handlerError(err) {
  const dbError = err && err.payload;
  if (!dbError || typeof dbError.code !== "string") {
    return { tag: "retryable", val: `unexpected error: ${err}` };
  }
  const reason = `database error ${dbError.code}: ${dbError.message}`;
  const permanent = ["22", "23", "42", "54"].some((c) => dbError.code.startsWith(c));
  return { tag: permanent ? "permanent" : "retryable", val: reason };
}

export const handler = {
  subscriptions() {
    return ["#"];
  },

  handle(event) {
    const headers = Object.fromEntries(event.headers);
    try {
      execute(INSERT, [
        text(event.id),
        text(event.type),
        text(event.source),
        text(event.aggregateType),
        text(event.subject),
        { tag: "int32", val: event.schemaVersion },
        { tag: "timestamp", val: event.time },
        { tag: "json", val: event.data },
        { tag: "json", val: JSON.stringify(headers) },
      ]);
    } catch (err) {
      throw handlerError(err);
    }
  },
};

export const migrations = {
  migrations() {
    return [
      { version: 1, name: "audit_events", sql: SCHEMA },
      { version: 2, name: "any_event_id", sql: ANY_EVENT_ID },
    ];
  },
};

export const reader = {
  // `GET events/{aggregate_type}/{aggregate_id}`: that aggregate's events, oldest first.
  read(request) {
    const segments = request.path.replace(/^\/+|\/+$/g, "").split("/");
    const readable = request.method === "GET" || request.method === "HEAD";
    if (readable && segments.length === 3 && segments[0] === "events") {
      return listEvents(segments[1], segments[2]);
    }
    return reply(404, { error: `no route for ${request.method} ${request.path}` });
  },
};

function listEvents(aggregateType, aggregateId) {
  let rows;
  try {
    rows = query(LIST, [text(aggregateType), text(aggregateId)]);
  } catch (err) {
    const e = err.payload || { code: "", message: String(err) };
    return reply(500, { error: `${e.code} ${e.message}` });
  }
  const events = rows.rows.map((row) =>
    Object.fromEntries(rows.columns.map((name, i) => [name, toJson(row[i])])),
  );
  return reply(200, { aggregateType, aggregateId, events });
}

function toJson(cell) {
  switch (cell.tag) {
    case "null":
      return null;
    case "int64":
      return Number(cell.val);
    case "json":
      try {
        return JSON.parse(cell.val);
      } catch {
        return cell.val;
      }
    case "bytes":
      return Array.from(cell.val);
    default:
      return cell.val;
  }
}

function reply(status, body) {
  return {
    status,
    headers: [["content-type", "application/json"]],
    body: new TextEncoder().encode(JSON.stringify(body)),
  };
}
