#!/usr/bin/env bash
# A throwaway Postgres cluster run as the `postgres` OS user (Postgres refuses root), on a
# port of its own. Source it, then: start_cluster DIR PORT; run_psql ...; (stopped on exit).
BIN=/usr/lib/postgresql/${PG_MAJOR:-15}/bin

as_postgres() { sudo -u postgres "$@"; }

start_cluster() {
    CLUSTER_DIR=$1 CLUSTER_PORT=$2
    if [ -f "$CLUSTER_DIR/pgdata/postmaster.pid" ]; then
        as_postgres "$BIN/pg_ctl" -D "$CLUSTER_DIR/pgdata" stop -m fast >/dev/null || true
    fi
    rm -rf "$CLUSTER_DIR/pgdata"
    mkdir -p "$CLUSTER_DIR/pgdata" && chown postgres "$CLUSTER_DIR" "$CLUSTER_DIR/pgdata"
    as_postgres "$BIN/initdb" -D "$CLUSTER_DIR/pgdata" -A trust -U postgres >/dev/null
    as_postgres "$BIN/pg_ctl" -D "$CLUSTER_DIR/pgdata" -l "$CLUSTER_DIR/postgres.log" -w \
        -o "-p $CLUSTER_PORT -k /tmp -c listen_addresses='' ${CLUSTER_OPTIONS:-}" start >/dev/null
    trap stop_cluster EXIT
}

stop_cluster() {
    as_postgres "$BIN/pg_ctl" -D "$CLUSTER_DIR/pgdata" stop -m fast >/dev/null || true
}

run_psql() {
    as_postgres psql -h /tmp -p "$CLUSTER_PORT" -U postgres -d postgres -X -v ON_ERROR_STOP=1 "$@"
}
