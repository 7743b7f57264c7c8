#!/usr/bin/env bash
# Make sure the local services tests may use are up (PostgreSQL, MariaDB, Redis).
# On a machine without them, say so; under CI=true a missing service is an error.
set -uo pipefail

missing=()
ensure() { # name check-cmd start-cmd
  local name=$1 check=$2 start=$3
  if eval "$check" >/dev/null 2>&1; then return 0; fi
  if [ "$(id -u)" = 0 ] && eval "$start" >/dev/null 2>&1; then
    for _ in $(seq 1 30); do
      if eval "$check" >/dev/null 2>&1; then echo "services: started $name"; return 0; fi
      sleep 1
    done
  fi
  missing+=("$name")
}

if command -v pg_isready >/dev/null 2>&1; then
  ensure PostgreSQL "pg_isready -h 127.0.0.1 -p 5432" \
    'pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql | head -n1) main start'
else
  missing+=("PostgreSQL (pg_isready not installed)")
fi
if command -v mariadb-admin >/dev/null 2>&1; then
  ensure MariaDB "mariadb-admin -h 127.0.0.1 -u root ping" \
    "start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd"
else
  missing+=("MariaDB (mariadb-admin not installed)")
fi
if command -v redis-cli >/dev/null 2>&1; then
  ensure Redis "redis-cli -h 127.0.0.1 ping" \
    'redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log'
else
  missing+=("Redis (redis-cli not installed)")
fi

if [ ${#missing[@]} -gt 0 ]; then
  echo "services: not available: ${missing[*]}"
  if [ "${CI:-}" = "true" ]; then
    echo "services: CI needs them" >&2
    exit 1
  fi
  echo "services: tests that need them will say they were skipped"
fi
exit 0
