#!/usr/bin/env bash
# The invocation benchmark (release build); prints a table for BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/services.sh
bash scripts/build-plugins.sh
cargo bench --locked -p eventhost --bench invoke
