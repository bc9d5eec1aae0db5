#!/usr/bin/env bash
# Makes sure PostgreSQL (127.0.0.1:5432, no password, as on this machine kind) and RabbitMQ
# (127.0.0.1:5672, guest/guest) are installed, running and reachable; installs them from
# Debian's packages when missing.
set -euo pipefail
say() { printf '[services] %s\n' "$*"; }

pg_ready() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }

if ! command -v pg_ctlcluster >/dev/null 2>&1; then
  say "PostgreSQL is not installed: installing Debian's postgresql package"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq postgresql >/dev/null
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  # Local, password-less TCP access for the test and dev commands, as on this machine kind.
  hba=/etc/postgresql/$version/main/pg_hba.conf
  sed -i -E 's/^(host\s+all\s+all\s+127\.0\.0\.1\/32\s+)\S+/\1trust/; s/^(host\s+all\s+all\s+::1\/128\s+)\S+/\1trust/' "$hba"
  say "PostgreSQL $version installed; 127.0.0.1 connections trusted"
fi

if pg_ready; then
  say "PostgreSQL is running on 127.0.0.1:5432"
else
  say "PostgreSQL is down: starting it"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n 1)" main start || true
  for _ in $(seq 1 60); do pg_ready && break; sleep 0.5; done
  pg_ready || { say "PostgreSQL did not come up on 127.0.0.1:5432"; exit 1; }
  say "PostgreSQL started"
fi

# RabbitMQ on 127.0.0.1:5672 (guest/guest), installed from Debian's packages when missing.
amqp_ready() { (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; }

if ! command -v rabbitmq-server >/dev/null 2>&1; then
  say "RabbitMQ is not installed: installing Debian's rabbitmq-server package"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq rabbitmq-server >/dev/null
fi

if amqp_ready && rabbitmq-diagnostics -q check_running >/dev/null 2>&1; then
  say "RabbitMQ is running on 127.0.0.1:5672"
else
  say "RabbitMQ is down: starting it"
  amqp_ready || rabbitmq-server -detached >/dev/null 2>&1 || true
  # The node takes a few seconds to boot; wait until it accepts AMQP and says it runs.
  for _ in $(seq 1 120); do
    amqp_ready && rabbitmq-diagnostics -q check_running >/dev/null 2>&1 && break
    sleep 1
  done
  amqp_ready || { say "RabbitMQ did not come up on 127.0.0.1:5672"; exit 1; }
  say "RabbitMQ started"
fi

# The plugins' entries are consistent-hash exchanges (per-aggregate partitions). The plugin
# ships with RabbitMQ; enabling it is idempotent and takes effect without a restart.
if ! rabbitmq-plugins list -e -m 2>/dev/null | grep -qx rabbitmq_consistent_hash_exchange; then
  say "enabling rabbitmq_consistent_hash_exchange"
  rabbitmq-plugins enable rabbitmq_consistent_hash_exchange >/dev/null
fi
