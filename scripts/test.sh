#!/usr/bin/env bash
# The test command: services up, plugins built, then the whole suite (unit, integration
# and sandbox tests against the real PostgreSQL).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/services.sh
bash scripts/build-plugins.sh
# The author-guide tests build with cargo-component too (built once, outside the clone).
bash scripts/toolchains.sh --with-cargo-component >/dev/null
# The dashboard test drives Debian's Chromium with playwright-core (installed once).
bash scripts/browser.sh >/dev/null
echo "[test] cargo test -p eventhost (host library, CLI, fixtures and sandbox tests)"
cargo test -p eventhost --locked --features failpoints "$@"
echo "[test] all tests passed"
