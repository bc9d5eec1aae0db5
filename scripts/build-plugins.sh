#!/usr/bin/env bash
# Builds the plugin components: the Rust ones (reference plugins and the test probe) for
# wasm32-wasip2, then the Python and JavaScript ones (scripts/build-guests.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '[plugins] %s\n' "$*"; }

if ! rustup target list --installed | grep -qx wasm32-wasip2; then
  say "adding the wasm32-wasip2 target"
  rustup target add wasm32-wasip2
fi
say "building user-stats, audit-log and the test probe (cargo build --target wasm32-wasip2 --release)"
cargo build --quiet --target wasm32-wasip2 --release -p user-stats -p audit-log -p probe
out="${CARGO_TARGET_DIR:-target}/wasm32-wasip2/release"
for p in user_stats audit_log probe; do
  say "$(ls -l "$out/$p.wasm" | awk '{print $5}') bytes  $out/$p.wasm"
done
bash scripts/build-guests.sh
