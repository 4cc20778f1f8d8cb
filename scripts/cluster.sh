#!/usr/bin/env bash
# Starts a local two-node Mirage cluster: PostgreSQL, Redis, S3-compatible
# storage (moto, when installed; else both nodes share one data directory),
# and two nodes on 127.0.0.1:5001 and :5002. Ctrl-C stops everything.
#
#   cargo build --release && scripts/cluster.sh
#
# Everything lives in a temporary directory that is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

MIRAGE=${MIRAGE:-${CARGO_TARGET_DIR:-target}/release/mirage}
PG_PORT=${PG_PORT:-55432}
REDIS_PORT=${REDIS_PORT:-56379}
S3_PORT=${S3_PORT:-59000}
[ -x "$MIRAGE" ] || { echo "no $MIRAGE: run cargo build --release first" >&2; exit 1; }

# The real bin directory (distributions link only some tools onto PATH).
pg_bin=$(dirname "$(readlink -f "$(command -v initdb || ls -d /usr/lib/postgresql/*/bin/initdb | tail -1)")")
command -v redis-server >/dev/null || { echo "redis-server is not installed" >&2; exit 1; }

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    as_pg "$pg_bin/pg_ctl" -D "$work/pg" -m fast stop >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

# PostgreSQL refuses to run as root: use an unprivileged user then.
as_pg() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
    chown postgres "$work"
fi

echo "PostgreSQL on 127.0.0.1:$PG_PORT"
as_pg "$pg_bin/initdb" -D "$work/pg" -U mirage --auth=trust >/dev/null
as_pg "$pg_bin/pg_ctl" -D "$work/pg" -l "$work/pg.log" -w \
    -o "-p $PG_PORT -k $work -c listen_addresses=127.0.0.1" start >/dev/null
as_pg "$pg_bin/createdb" -h 127.0.0.1 -p "$PG_PORT" -U mirage mirage

echo "Redis on 127.0.0.1:$REDIS_PORT"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$work" --appendonly yes \
    >"$work/redis.log" 2>&1 &
pids+=($!)

files_args=()
if python3 -c 'import moto.server' 2>/dev/null; then
    echo "S3 (moto) on 127.0.0.1:$S3_PORT"
    python3 -m moto.server -H 127.0.0.1 -p "$S3_PORT" >"$work/s3.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 50); do curl -fs "http://127.0.0.1:$S3_PORT/" >/dev/null 2>&1 && break; sleep 0.2; done
    curl -fs -X PUT "http://127.0.0.1:$S3_PORT/mirage" >/dev/null
    export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test
    files_args=(--files "s3://mirage?endpoint=http://127.0.0.1:$S3_PORT&region=us-east-1")
else
    echo "moto not installed: both nodes share $work/data/files (pip install 'moto[server]' for S3)"
fi

for node in a:5001 b:5002; do
    port=${node##*:}
    # With PostgreSQL the data directory only holds local uploads: shared.
    "$MIRAGE" --listen "127.0.0.1:$port" --data-dir "$work/data" \
        --database "postgres://mirage@127.0.0.1:$PG_PORT/mirage" \
        --redis "redis://127.0.0.1:$REDIS_PORT" "${files_args[@]}" \
        --public-url "http://127.0.0.1:$port" --log warn &
    pids+=($!)
done
for port in 5001 5002; do
    for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/api/ping" >/dev/null && break; sleep 0.1; done
    echo "node up: http://127.0.0.1:$port"
done
echo "Ctrl-C to stop."
wait
