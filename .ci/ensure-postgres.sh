#!/usr/bin/env bash
# Make sure a local PostgreSQL server runs with the role and database the registry tests use, then
# print `DOCKYARD_TEST_POSTGRES_URL=...` as the only line on stdout (progress goes to stderr).
# Idempotent: installs PostgreSQL with apt-get only when it is missing, creates a cluster only when
# there is none, creates the role and database only when they do not exist. Needs root or sudo.
set -euo pipefail

PG_ROLE="${PG_ROLE:-dockyard}"
PG_PASSWORD="${PG_PASSWORD:-dockyard}"
PG_DATABASE="${PG_DATABASE:-dockyard_test}"
READY_TIMEOUT_S=30

log() { echo "ensure-postgres: $*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# Run a command as the postgres OS user, from a folder it can read.
as_postgres() {
    if [ "$(id -u)" -eq 0 ]; then
        (cd / && runuser -u postgres -- "$@")
    else
        (cd / && sudo -u postgres "$@")
    fi
}

if ! command -v pg_lsclusters >/dev/null 2>&1; then
    log "PostgreSQL is not installed; installing it with apt-get"
    as_root apt-get update >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        postgresql >&2
fi

if [ -z "$(pg_lsclusters --no-header 2>/dev/null)" ]; then
    version="$(ls /usr/lib/postgresql | sort -V | tail -n 1)"
    log "no PostgreSQL cluster; creating ${version}/main"
    as_root pg_createcluster "$version" main >&2
fi

# The first cluster is the one the tests use.
read -r version cluster port status _ < <(pg_lsclusters --no-header | head -n 1)
if [ "$status" != "online" ]; then
    log "starting cluster ${version}/${cluster} on port ${port}"
    as_root pg_ctlcluster "$version" "$cluster" start >&2
fi

for _ in $(seq "$READY_TIMEOUT_S"); do
    if pg_isready -q -h 127.0.0.1 -p "$port"; then
        break
    fi
    sleep 1
done
if ! pg_isready -q -h 127.0.0.1 -p "$port"; then
    log "cluster ${version}/${cluster} does not accept connections on port ${port}"
    exit 1
fi

psql_admin() {
    as_postgres psql -p "$port" -v ON_ERROR_STOP=1 -qtA "$@"
}

if [ "$(psql_admin -c "SELECT 1 FROM pg_roles WHERE rolname = '${PG_ROLE}'")" != "1" ]; then
    log "creating role ${PG_ROLE}"
    psql_admin -c "CREATE ROLE \"${PG_ROLE}\" LOGIN SUPERUSER PASSWORD '${PG_PASSWORD}'" >&2
fi

if [ "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = '${PG_DATABASE}'")" != "1" ]; then
    log "creating database ${PG_DATABASE}"
    as_postgres createdb -p "$port" -O "$PG_ROLE" "$PG_DATABASE" >&2
fi

echo "DOCKYARD_TEST_POSTGRES_URL=postgresql+psycopg://${PG_ROLE}:${PG_PASSWORD}@127.0.0.1:${port}/${PG_DATABASE}"
