#!/usr/bin/env bash
# Start a throwaway PostgreSQL on 127.0.0.1:55432 for the tests and print the URL to
# export as GPUPOOL_TEST_PG_URL. Debian's PostgreSQL refuses to run as root, so it runs
# as the postgres user.
set -euo pipefail
pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
pg_data=${PGDATA_DIR:-/tmp/gpupool-dev-pg}
if [ ! -f "$pg_data/PG_VERSION" ]; then
    mkdir -p "$pg_data" && chown postgres:postgres "$pg_data"
    runuser -u postgres -- "$pg_bin/initdb" -D "$pg_data" -A trust -U postgres >/dev/null
fi
runuser -u postgres -- "$pg_bin/pg_ctl" -D "$pg_data" -l "$pg_data/log" -w status >/dev/null 2>&1 ||
    runuser -u postgres -- "$pg_bin/pg_ctl" -D "$pg_data" -l "$pg_data/log" -w \
        -o "-c listen_addresses=127.0.0.1 -p 55432 -k $pg_data -c max_connections=200 -c fsync=off" start >/dev/null
runuser -u postgres -- "$pg_bin/createdb" -h 127.0.0.1 -p 55432 gpupool_test 2>/dev/null || true
echo "postgresql+psycopg://postgres@127.0.0.1:55432/gpupool_test"
