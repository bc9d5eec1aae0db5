#!/usr/bin/env bash
# What each of the relay's statements costs PostgreSQL, per batch of 500 rows, on a
# backlog of 100,000 rows shaped like the relay bench's (10,000 aggregates x 10 events).
# Each variant drains the whole backlog once with pgbench (one client, 190 batches) and
# prints pgbench's mean latency per statement: on an otherwise idle server, the
# server's time. Run: bash bench/relay-sql/run.sh   (needs the local PostgreSQL)
set -euo pipefail
cd "$(dirname "$0")/../.."
source bench/scratch-db.sh eventhost_relay_sql
psql "${PG[@]}" -q -d "$DB" -f migrations/20261123000002_outbox.sql

# $1: the SQL expression of each row's event id.
fill() {
  psql "${PG[@]}" -q -d "$DB" <<SQL
TRUNCATE outbox_events;
INSERT INTO outbox_events (event_id, aggregate_type, aggregate_id, event_type, source,
                           payload, occurred_at, headers)
SELECT $1, 'user', 'user-' || u, 'user.updated', 'bench',
  jsonb_build_object('userId', format('9e8d7c6b-5a4f-4e3d-8c2b-%s', lpad(u::text, 12, '0')),
    'email', 'john.doe@example.com', 'firstName', 'John', 'lastName', 'Doe',
    'role', 'doctor', 'isActive', true, 'phoneNumber', '+263 77 123 4567',
    'mustChangePassword', false, 'createdAt', '2026-11-23T09:59:58Z', 'n', n),
  now(), '{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}'
FROM generate_series(0, 9) n, generate_series(0, 9999) u ORDER BY n, u;
VACUUM ANALYZE outbox_events;
CHECKPOINT;
SQL
}
RANDOM_IDS="gen_random_uuid()"
# Time-ordered like UUIDv7: insertion order, random tail.
ORDERED_IDS="(lpad(to_hex(n * 10000 + u), 12, '0') || substr(md5(random()::text), 1, 20))::uuid"

COLUMNS="seq, event_id, aggregate_type, aggregate_id, event_type, source, payload, schema_version, occurred_at, headers"
PROBE="LEFT JOIN LATERAL (SELECT p.seq, p.next_attempt_at FROM outbox_events p WHERE p.status = 'pending' AND p.aggregate_type = c.aggregate_type AND p.aggregate_id = c.aggregate_id AND p.seq < c.seq ORDER BY p.seq DESC LIMIT 1) prev ON true"
claim() { # $1: FOR UPDATE SKIP LOCKED or nothing; $2: the probe or nothing; $3: columns
  echo "WITH c AS (SELECT ctid, $3 FROM outbox_events WHERE status = 'pending' AND next_attempt_at <= now() ORDER BY seq LIMIT 500 $1) SELECT c.* FROM c $2 ORDER BY c.seq;"
}
# The rows the claim just took, for the mark (not part of any variant's cost).
ADDRESSES="SELECT array_agg(event_id)::text AS ids, array_agg(ctid)::text AS ctids FROM (SELECT event_id, ctid FROM outbox_events WHERE status = 'pending' ORDER BY seq LIMIT 500) s \\gset"
BY_ID="UPDATE outbox_events SET status = 'published', published_at = now() WHERE event_id = ANY(':ids'::uuid[]);"
BY_ADDRESS="UPDATE outbox_events SET status = 'published', published_at = now() WHERE ctid = ANY(':ctids'::tid[]) AND status = 'pending';"

variant() { # name, ids, claim, mark
  printf 'BEGIN;\n%s\n%s\n%s\nCOMMIT;\n' "$3" "$ADDRESSES" "$4" > "$WORK/script.sql"
  fill "$2"
  echo "== $1"
  pgbench "${PG[@]}" -n -r -t 190 -f "$WORK/script.sql" "$DB" 2>&1 \
    | awk '/^ +[0-9.]+ +[0-9]+ +/ { printf "  %7.3f ms  %.70s\n", $1, substr($0, index($0, $3)) }'
}
variant "as before this change: random ids, marked by id" "$RANDOM_IDS" "$(claim 'FOR UPDATE SKIP LOCKED' "$PROBE" "$COLUMNS")" "$BY_ID"
variant "random ids, marked by address" "$RANDOM_IDS" "$(claim 'FOR UPDATE SKIP LOCKED' "$PROBE" "$COLUMNS")" "$BY_ADDRESS"
variant "the relay now: time-ordered ids, marked by address" "$ORDERED_IDS" "$(claim 'FOR UPDATE SKIP LOCKED' "$PROBE" "$COLUMNS")" "$BY_ADDRESS"
variant "claim without the order probe" "$ORDERED_IDS" "$(claim 'FOR UPDATE SKIP LOCKED' '' "$COLUMNS")" "$BY_ADDRESS"
variant "claim without the probe or the row locks" "$ORDERED_IDS" "$(claim '' '' "$COLUMNS")" "$BY_ADDRESS"
variant "claim of ids only (no payload or headers sent)" "$ORDERED_IDS" "$(claim 'FOR UPDATE SKIP LOCKED' '' 'seq, event_id')" "$BY_ADDRESS"
