#!/usr/bin/env bash
# The run command: build everything, run the shipped fixtures through both reference
# plugins (`eventhost plugin test`), then start `eventhost serve` on the dev database:
# the outbox relay and the reference auth service on 127.0.0.1:8080 (Ctrl-C stops it).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/services.sh
bash scripts/build-plugins.sh
cargo build --quiet --locked -p eventhost
bin="${CARGO_TARGET_DIR:-target}/debug/eventhost"
wasm="${CARGO_TARGET_DIR:-target}/wasm32-wasip2/release"
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/eventhost}"

echo "[run] eventhost plugin test $wasm/user_stats.wasm tests/fixtures/user-stats"
"$bin" plugin test "$wasm/user_stats.wasm" tests/fixtures/user-stats
echo "[run] eventhost plugin test $wasm/audit_log.wasm tests/fixtures/audit-log"
"$bin" plugin test "$wasm/audit_log.wasm" tests/fixtures/audit-log
echo "[run] eventhost serve (database: $DATABASE_URL; auth service on 127.0.0.1:8080; Ctrl-C stops)"
echo "[run]   try: curl -s -XPOST localhost:8080/auth/register -H 'content-type: application/json' -d '{\"email\":\"ann@example.com\",\"name\":\"Ann\"}'"
exec "$bin" serve
