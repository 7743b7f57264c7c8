#!/usr/bin/env bash
# Install the real clients the end-to-end tests drive: psql (Debian's postgresql-client),
# pgjdbc (Debian's libpostgresql-jdbc-java) and a Python venv with psycopg 3 and SQLAlchemy. Idempotent; prints the venv's python on stdout.
set -euo pipefail

if ! command -v psql >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup-clients: installing postgresql-client" >&2
    (apt-get install -y -qq postgresql-client || (apt-get update -qq && apt-get install -y -qq postgresql-client)) >&2
  else
    echo "setup-clients: psql is missing and cannot be installed here" >&2
  fi
fi

# pgjdbc (Debian's package) and a Java runtime to drive it.
if [ ! -f /usr/share/java/postgresql.jar ] || ! command -v java >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup-clients: installing pgjdbc" >&2
    pkgs=libpostgresql-jdbc-java
    command -v java >/dev/null 2>&1 || pkgs="$pkgs default-jre-headless"
    (apt-get install -y -qq $pkgs || (apt-get update -qq && apt-get install -y -qq $pkgs)) >&2
  else
    echo "setup-clients: pgjdbc is missing and cannot be installed here" >&2
  fi
fi

venv="${JOINERY_VENV:-$HOME/.cache/joinery-venv}"
python="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
  echo "setup-clients: creating $venv" >&2
  "$python" -m venv "$venv" >&2
fi
req="$(dirname "$0")/../tests/python/requirements.txt"
stamp="$venv/.joinery-requirements"
if ! cmp -s "$req" "$stamp" 2>/dev/null; then
  echo "setup-clients: installing $(tr '\n' ' ' < "$req")" >&2
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$req" >&2
  cp "$req" "$stamp"
fi
echo "$venv/bin/python"
