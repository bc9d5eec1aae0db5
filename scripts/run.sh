#!/usr/bin/env bash
# The run command: services up, everything built, the shipped fixtures run through both
# reference plugins, then `eventhost serve` with user-stats and audit-log hot-loaded from
# target/plugins.d. Once it is ready, a user is registered through the reference auth
# service and their stats are read back through the user-stats read hook. The host keeps
# running in the foreground; Ctrl-C stops it gracefully.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '[run] %s\n' "$*"; }

bash scripts/services.sh
bash scripts/build-plugins.sh
if ! command -v curl >/dev/null 2>&1; then
  say "installing curl (used to show the flow)"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq && apt-get install -y -qq curl >/dev/null
fi
cargo build --quiet --locked -p eventhost
target="${CARGO_TARGET_DIR:-target}"
bin="$target/debug/eventhost"
wasm="$target/wasm32-wasip2/release"
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/eventhost}"
export EVENTHOST_PLUGIN_DIR="${EVENTHOST_PLUGIN_DIR:-$target/plugins.d}"
api="http://${EVENTHOST_LISTEN:-127.0.0.1:8081}"
auth="http://${EVENTHOST_AUTH_LISTEN:-127.0.0.1:8080}"

say "eventhost plugin test: the shipped fixtures"
"$bin" plugin test "$wasm/user_stats.wasm" tests/fixtures/user-stats
"$bin" plugin test "$wasm/audit_log.wasm" tests/fixtures/audit-log

# Copy, then rename into place: the host never sees a half-written component.
mkdir -p "$EVENTHOST_PLUGIN_DIR"
for p in user_stats audit_log; do
  cp "$wasm/$p.wasm" "$EVENTHOST_PLUGIN_DIR/.$p.wasm.tmp"
  mv "$EVENTHOST_PLUGIN_DIR/.$p.wasm.tmp" "$EVENTHOST_PLUGIN_DIR/$p.wasm"
done

say "eventhost serve (database $DATABASE_URL, plugins from $EVENTHOST_PLUGIN_DIR)"
"$bin" serve &
host=$!
trap 'kill -TERM $host 2>/dev/null; wait $host' INT TERM
for _ in $(seq 1 120); do
  curl -sf "$api/readyz" >/dev/null 2>&1 && break
  kill -0 $host 2>/dev/null || { say "eventhost serve exited"; wait $host; exit 1; }
  sleep 0.5
done
curl -sf "$api/readyz" >/dev/null || { say "eventhost serve is not ready: $(curl -s "$api/readyz")"; exit 1; }

email="ann.$(date +%s)@example.com"
say "POST $auth/auth/register  {\"email\":\"$email\",\"name\":\"Ann\"}"
registered=$(curl -sf -XPOST "$auth/auth/register" -H 'content-type: application/json' \
  -d "{\"email\":\"$email\",\"name\":\"Ann\"}")
say "  -> $registered"
id=$(printf '%s' "$registered" | sed -E 's/.*"id":"([^"]+)".*/\1/')
# The stats row is made by the event path: outbox -> relay -> RabbitMQ -> user-stats.
for _ in $(seq 1 50); do
  stats=$(curl -s "$api/plugins/user-stats/stats/$id")
  case "$stats" in *'"createdVia":"event"'*) break ;; esac
  sleep 0.1
done
say "GET $api/plugins/user-stats/stats/$id"
say "  -> $stats"
say "GET $api/plugins/audit-log/events/user/$id"
say "  -> $(curl -s "$api/plugins/audit-log/events/user/$id")"
say "running: $api/metrics, $api/admin/plugins, $api/readyz; Ctrl-C stops"
wait $host
