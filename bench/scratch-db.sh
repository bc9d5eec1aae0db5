# Sourced by the pgbench scripts under bench/ after they cd to the repository root:
# starts the local services, makes a scratch database `$1_<pid>` (its name in DB, psql's
# connection options in PG, a work directory in WORK) and removes both on exit.
bash scripts/services.sh >/dev/null
PG=(-h 127.0.0.1 -U postgres)
DB="$1_$$"
WORK="$(mktemp -d)"
trap 'psql "${PG[@]}" -qc "DROP DATABASE IF EXISTS $DB" postgres >/dev/null 2>&1; rm -rf "$WORK"' EXIT
psql "${PG[@]}" -qc "CREATE DATABASE $DB" postgres
