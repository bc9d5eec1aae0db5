#!/usr/bin/env bash
# The browser the dashboard test drives, installed once: Debian's Chromium (apt) and
# playwright-core (npm, pinned, outside the clone). Prints only `export` lines on
# stdout, so `eval "$(scripts/browser.sh)"` sets EVENTHOST_CHROMIUM and
# EVENTHOST_PLAYWRIGHT.
set -euo pipefail
PLAYWRIGHT_CORE=1.64.1
tools="${EVENTHOST_TOOLS:-$HOME/.cache/eventhost/tools}"
say() { printf '[browser] %s\n' "$*" >&2; }

chromium="${EVENTHOST_CHROMIUM:-/usr/bin/chromium}"
if [ ! -x "$chromium" ]; then
  command -v apt-get >/dev/null || { say "Chromium is missing at $chromium and apt-get is not here to install it"; exit 1; }
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  say "installing Debian's chromium (once)"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium fonts-dejavu-core >&2 \
    || { $sudo apt-get update >&2 && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium fonts-dejavu-core >&2; }
fi

pw="$tools/playwright-core-$PLAYWRIGHT_CORE"
if [ ! -e "$pw/node_modules/playwright-core/package.json" ]; then
  command -v npm >/dev/null || { say "node and npm are needed for the browser test"; exit 1; }
  say "installing playwright-core $PLAYWRIGHT_CORE into $pw"
  rm -rf "$pw.partial"
  mkdir -p "$pw.partial"
  npm install --silent --no-audit --no-fund --prefix "$pw.partial" "playwright-core@$PLAYWRIGHT_CORE" >&2
  rm -rf "$pw"
  mv "$pw.partial" "$pw"
fi
echo "export EVENTHOST_CHROMIUM=\"$chromium\""
echo "export EVENTHOST_PLAYWRIGHT=\"$pw/node_modules\""
