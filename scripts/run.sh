#!/usr/bin/env bash
# The run command (for now): build everything, then run the shipped fixtures through both
# reference plugins with `eventhost plugin test`, and invoke user-stats on one event in the
# dev database so its effect can be inspected.
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
echo "[run] eventhost plugin invoke $wasm/user_stats.wasm tests/fixtures/events/user-created.json (database: $DATABASE_URL)"
"$bin" plugin invoke "$wasm/user_stats.wasm" tests/fixtures/events/user-created.json
