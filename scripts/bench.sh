#!/usr/bin/env bash
# The benchmarks (release build); each prints the figures recorded in BENCHMARKS.md.
#   bash scripts/bench.sh          both
#   bash scripts/bench.sh invoke   plugin invocation (issue 3)
#   bash scripts/bench.sh relay    outbox relay throughput and latency (issue 4)
#   bash scripts/bench.sh pipeline end to end through both plugins, WASM vs native (issue 5)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/services.sh
which="${1:-all}"
if [[ "$which" == all || "$which" == invoke ]]; then
  bash scripts/build-plugins.sh
  cargo bench --locked -p eventhost --bench invoke
fi
if [[ "$which" == all || "$which" == relay ]]; then
  cargo bench --locked -p eventhost --bench relay
fi
if [[ "$which" == all || "$which" == pipeline ]]; then
  bash scripts/build-plugins.sh
  cargo bench --locked -p eventhost --bench pipeline
fi
