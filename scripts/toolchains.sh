#!/usr/bin/env bash
# Installs the pinned guest toolchains, once, outside the clone (they are large and slow
# to fetch or build): componentize-py in a virtualenv, componentize-js (with the jco it
# brings) in an npm prefix, and with --with-cargo-component cargo-component for Rust
# authors who use it (built from crates.io: about 7 minutes on 2 cores, the first time
# only; the test suite asks for it, the run command does not). Prints nothing else on stdout but the
# `export` lines, so `eval "$(scripts/toolchains.sh)"` puts them on PATH.
set -euo pipefail
COMPONENTIZE_PY=0.25.1
COMPONENTIZE_JS=0.23.0
CARGO_COMPONENT=0.21.1
tools="${EVENTHOST_TOOLS:-$HOME/.cache/eventhost/tools}"
say() { printf '[toolchains] %s\n' "$*" >&2; }

py="$tools/componentize-py-$COMPONENTIZE_PY"
# A venv records its own path, so it is built in place; `.complete` marks a finished one.
if [ ! -e "$py/.complete" ]; then
  command -v python3 >/dev/null || { say "python3 is needed for Python plugins"; exit 1; }
  say "installing componentize-py $COMPONENTIZE_PY into $py"
  rm -rf "$py"
  python3 -m venv "$py"
  "$py/bin/pip" install --quiet --disable-pip-version-check "componentize-py==$COMPONENTIZE_PY" >&2
  touch "$py/.complete"
fi

js="$tools/componentize-js-$COMPONENTIZE_JS"
if [ ! -x "$js/node_modules/.bin/componentize-js" ]; then
  command -v npm >/dev/null || { say "node and npm are needed for JavaScript plugins"; exit 1; }
  say "installing componentize-js $COMPONENTIZE_JS into $js"
  rm -rf "$js.partial"
  mkdir -p "$js.partial"
  npm install --silent --no-audit --no-fund --prefix "$js.partial" \
    "@bytecodealliance/componentize-js@$COMPONENTIZE_JS" >&2
  rm -rf "$js"
  mv "$js.partial" "$js"
fi

cc="$tools/cargo-component-$CARGO_COMPONENT"
if [ "${1:-}" = --with-cargo-component ] && [ ! -x "$cc/bin/cargo-component" ]; then
  say "building cargo-component $CARGO_COMPONENT into $cc (once)"
  cargo install --quiet --locked --root "$cc.partial" cargo-component --version "$CARGO_COMPONENT" >&2
  rm -rf "$cc"
  mv "$cc.partial" "$cc"
fi
# cargo-component builds for wasm32-wasip1 and adapts the module to a component.
if [ -x "$cc/bin/cargo-component" ] && ! rustup target list --installed | grep -qx wasm32-wasip1; then
  say "adding the wasm32-wasip1 target (cargo-component builds for it)"
  rustup target add wasm32-wasip1 >&2
fi

# Reference clients the tests check the host with: the Prometheus Python client's parsers,
# the CloudEvents Python SDK (with its RabbitMQ and AMQP bindings) and pika, a plain
# AMQP 0-9-1 client.
PROMETHEUS_CLIENT=0.21.1
CLOUDEVENTS=2.2.0
PIKA=1.4.4
checks="$tools/test-tools-prometheus-$PROMETHEUS_CLIENT-cloudevents-$CLOUDEVENTS-pika-$PIKA"
if [ ! -e "$checks/.complete" ]; then
  say "installing the test tools (prometheus-client $PROMETHEUS_CLIENT, cloudevents $CLOUDEVENTS, pika $PIKA) into $checks"
  rm -rf "$checks"
  python3 -m venv "$checks"
  "$checks/bin/pip" install --quiet --disable-pip-version-check \
    "prometheus-client==$PROMETHEUS_CLIENT" "cloudevents==$CLOUDEVENTS" "pika==$PIKA" >&2
  touch "$checks/.complete"
fi

echo "export PATH=\"$py/bin:$js/node_modules/.bin:$cc/bin:\$PATH\""
echo "export EVENTHOST_TEST_PYTHON=\"$checks/bin/python\""
