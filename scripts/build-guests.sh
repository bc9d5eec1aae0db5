#!/usr/bin/env bash
# Builds the Python and JavaScript plugins (the audit-log examples and the test probes)
# into target/guests/, with the pinned toolchains of scripts/toolchains.sh. A component
# newer than its sources and the WIT is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '[guests] %s\n' "$*"; }
eval "$(bash scripts/toolchains.sh)"
out="${CARGO_TARGET_DIR:-target}/guests"
mkdir -p "$out"
out="$(cd "$out" && pwd)"   # absolute: componentize-py runs from the plugin's directory
root="$(pwd)"

fresh() { # fresh OUTPUT SOURCE_DIR: the output exists and nothing it is built from is newer
  [ -e "$1" ] && [ -z "$(find "$2" wit -newer "$1" -print -quit)" ]
}

python_plugin() { # python_plugin DIR WORLD OUTPUT
  fresh "$out/$3" "$1" && return
  say "componentize-py  $1 -> $out/$3"
  (cd "$1" && componentize-py -d "$root/wit" -w "$2" componentize app -o "$out/$3.partial" >/dev/null)
  mv "$out/$3.partial" "$out/$3"
}

js_plugin() { # js_plugin DIR WORLD OUTPUT
  fresh "$out/$3" "$1" && return
  say "componentize-js  $1 -> $out/$3"
  local source
  source="$(ls "$1"/*.js | head -n1)"
  componentize-js --wit wit --world-name "$2" --out "$out/$3.partial" "$source" >/dev/null
  mv "$out/$3.partial" "$out/$3"
}

python_plugin plugins/audit-log-py plugin audit_log_py.wasm
js_plugin plugins/audit-log-js plugin audit_log_js.wasm
python_plugin tests/plugins/py-probe handler-plugin py_probe.wasm
js_plugin tests/plugins/js-probe handler-plugin js_probe.wasm
for p in audit_log_py audit_log_js py_probe js_probe; do
  say "$(stat -c %s "$out/$p.wasm") bytes  $out/$p.wasm"
done
