#!/usr/bin/env bash
# What a plugin session's clean start and reset cost PostgreSQL per transaction: pgbench,
# one client, 15 s each, alternating, of
#   plain:  BEGIN / INSERT / COMMIT (the native handlers' transaction)
#   clean:  BEGIN; SELECT pg_backend_pid() / INSERT / the reset; COMMIT
#           (the plugin path's, from host/src/capabilities/db/session_sql.rs)
# Same round trips either way; prints the mean latency of each.
# Run: bash bench/clean-session/run.sh   (needs the local PostgreSQL)
set -euo pipefail
cd "$(dirname "$0")/../.."
source bench/scratch-db.sh eventhost_clean_session
psql "${PG[@]}" -q -d "$DB" -c "CREATE TABLE t (id bigserial PRIMARY KEY, v text)"
printf 'BEGIN;\nINSERT INTO t (v) VALUES (:client_id);\nCOMMIT;\n' > "$WORK/plain.sql"
printf 'BEGIN; SELECT pg_catalog.pg_backend_pid();\nINSERT INTO t (v) VALUES (:client_id);\nRESET ALL; UNLISTEN *; CLOSE ALL; DISCARD TEMP; DISCARD SEQUENCES; COMMIT;\n' > "$WORK/clean.sql"
for round in 1 2; do
  for kind in plain clean; do
    printf '%s  %s\n' "$kind" "$(pgbench "${PG[@]}" -n -T 15 -f "$WORK/$kind.sql" "$DB" 2>&1 | grep 'latency average')"
  done
done
