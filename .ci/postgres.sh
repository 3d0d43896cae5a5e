#!/usr/bin/env bash
# Start a local PostgreSQL server for the storage tests and print the URL they should use.
# Debian packages; needs root (CI runs as root). Idempotent: reuses a running cluster and an existing database.
set -euo pipefail
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo -n"
if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
    $sudo apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql >/dev/null
fi
version=$(ls /usr/lib/postgresql | sort -V | tail -1)
pg_lsclusters -h 2>/dev/null | awk '{print $2}' | grep -qx main || $sudo pg_createcluster "$version" main >&2
pg_lsclusters -h | awk '$2 == "main" {print $4}' | grep -qx online || $sudo pg_ctlcluster "$version" main start >&2
port=$(pg_lsclusters -h | awk '$2 == "main" {print $3}')
for _ in $(seq 30); do pg_isready -q -h 127.0.0.1 -p "$port" && break; sleep 1; done
as_postgres="runuser -u postgres --"
[ "$(id -u)" = 0 ] || as_postgres="sudo -n -u postgres"
psql_admin() { $as_postgres psql -p "$port" -v ON_ERROR_STOP=1 -qtA "$@"; }
[ "$(psql_admin -c "SELECT 1 FROM pg_roles WHERE rolname='huifang'")" = 1 ] \
    || psql_admin -c "CREATE ROLE huifang LOGIN PASSWORD 'huifang'" >&2
[ "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname='huifang_test'")" = 1 ] \
    || psql_admin -c "CREATE DATABASE huifang_test OWNER huifang" >&2
echo "postgresql+psycopg://huifang:huifang@127.0.0.1:${port}/huifang_test"
