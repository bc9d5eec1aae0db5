#!/usr/bin/env bash
# The benchmarks (release build); each prints the figures recorded in BENCHMARKS.md.
#   bash scripts/bench.sh          all of them
#   bash scripts/bench.sh invoke   plugin invocation (issue 3)
#   bash scripts/bench.sh relay    outbox relay throughput and latency, next to raw lapin and a peer relay (issues 4, 16)
#   bash scripts/bench.sh pipeline end to end through both plugins, WASM vs native (issue 5)
#   bash scripts/bench.sh memory   host RSS while a plugin asks for 1 GiB of rows (issue 11)
#   bash scripts/bench.sh hosts    1, 2 and 3 serve processes; failover after SIGKILL (issue 13)
#   bash scripts/bench.sh languages  audit-log in Rust, Python, JavaScript: loads, invocations, memory (issue 14)
#   bash scripts/bench.sh inbox    handling with an empty inbox vs millions of rows; pruning rate (issue 16)
#   bash scripts/bench.sh outbox-growth  claim, backlog and purge with 100k to 10M published rows (issue 16)
#   bash scripts/bench.sh relays   1, 2 and 4 relay processes on one outbox (issue 16)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/services.sh
which="${1:-all}"
if [[ "$which" == all || "$which" == invoke ]]; then
  bash scripts/build-plugins.sh
  cargo bench --locked -p eventhost --bench invoke
fi
if [[ "$which" == all || "$which" == relay ]]; then
  # The peer relay (ruststream-sqlx, on sqlx 0.9) is its own package, built only here.
  cargo build --release --locked -p eventhost-peer-relay
  # Absolute: the bench runs in the package's directory, not here.
  EVENTHOST_PEER_RELAY="$(cd "${CARGO_TARGET_DIR:-target}" && pwd)/release/peer-relay" \
    cargo bench --locked -p eventhost --bench relay
fi
if [[ "$which" == all || "$which" == pipeline ]]; then
  bash scripts/build-plugins.sh
  cargo bench --locked -p eventhost --bench pipeline
fi
if [[ "$which" == all || "$which" == memory ]]; then
  bash scripts/build-plugins.sh
  cargo bench --locked -p eventhost --bench memory
fi
if [[ "$which" == all || "$which" == hosts ]]; then
  bash scripts/build-plugins.sh
  cargo bench --locked -p eventhost --bench hosts
fi
if [[ "$which" == all || "$which" == languages ]]; then
  bash scripts/build-plugins.sh
  cargo bench --locked -p eventhost --bench languages
fi
if [[ "$which" == all || "$which" == inbox ]]; then
  bash scripts/build-plugins.sh
  cargo bench --locked -p eventhost --bench inbox
fi
if [[ "$which" == all || "$which" == outbox-growth ]]; then
  cargo bench --locked -p eventhost --bench outbox_growth
fi
if [[ "$which" == all || "$which" == relays ]]; then
  cargo bench --locked -p eventhost --bench relays
fi
