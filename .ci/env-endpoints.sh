#!/usr/bin/env bash
# The fixtures' first path: services started here by hand and handed to the
# tests through the environment, as a developer with their own MinIO or
# PostgreSQL would. Starts the locally built test images on loopback ports,
# runs the S3 and Supabase conformance targets against them, removes them.
set -euo pipefail
cd "$(dirname "$0")/.."

bucket=chatvault-env
s3=$(docker run -d --rm -p 127.0.0.1::9000 -e S3_BUCKET="$bucket" chatvault-test/s3:latest)
pg=$(docker run -d --rm -p 127.0.0.1::5432 -e POSTGRES_USER=postgres -e POSTGRES_PASSWORD=ci-env \
    chatvault-test/postgres:latest)
trap 'docker rm -f "$s3" "$pg" >/dev/null 2>&1 || true' EXIT

port_of() { docker port "$1" "$2/tcp" | head -n 1 | sed 's/.*://'; }
s3_port=$(port_of "$s3" 9000)
pg_port=$(port_of "$pg" 5432)

wait_for() { # name port: until a TCP connection is accepted (60 s at most)
    for _ in $(seq 1 120); do
        (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null && return 0
        sleep 0.5
    done
    echo "$1 did not come up on 127.0.0.1:$2" >&2
    return 1
}
wait_for S3 "$s3_port"
wait_for PostgreSQL "$pg_port"
for _ in $(seq 1 60); do
    pg_isready -q -h 127.0.0.1 -p "$pg_port" && break
    sleep 0.5
done

env -u CHATVAULT_TEST_S3_IMAGE -u CHATVAULT_TEST_PG_IMAGE \
    CHATVAULT_TEST_S3_ENDPOINT="http://127.0.0.1:$s3_port" \
    CHATVAULT_TEST_S3_BUCKET="$bucket" \
    CHATVAULT_TEST_S3_CHECKS_CREDENTIALS=0 \
    AWS_ACCESS_KEY_ID=chatvault AWS_SECRET_ACCESS_KEY=chatvault-secret AWS_REGION=us-east-1 \
    CHATVAULT_TEST_PG_URL="postgres://postgres:ci-env@127.0.0.1:$pg_port/postgres" \
    cargo test --all-features -p chatvault-s3 -p chatvault-supabase --test conformance
