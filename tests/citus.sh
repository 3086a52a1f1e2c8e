#!/usr/bin/env bash
# Scale-out on a real Citus cluster: a coordinator and two workers (three Postgres servers
# on this machine), a distributed table of vectors, and the combinable aggregates
# (group_influence, sum, avg). Checks that Citus pushes them down (worker_partial_agg on the
# workers, coord_combine_agg on the coordinator, in EXPLAIN VERBOSE) and that the results
# equal a single-node run over the same rows. Builds Citus from ../shared/vendor
# (scripts/vendor.sh citus) and skips, saying why, where that source is absent. Needs an
# installed build of airrep.
set -euo pipefail
cd "$(dirname "$0")/.."
PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
scripts/vendor.sh citus
if [ ! -f "$($PG_CONFIG --sharedir)/extension/citus.control" ]; then
    echo "SKIP tests/citus.sh: Citus is not installed (no ../shared/vendor/citus-*.tar.gz to build it from)"
    exit 0
fi
source scripts/cluster.sh
ROOT=/tmp/airrep-citus
PORTS=(28830 28831 28832) # coordinator, worker, worker
stop_all() {
    for port in "${PORTS[@]}"; do
        as_postgres "$BIN/pg_ctl" -D "$ROOT/$port/pgdata" stop -m fast >/dev/null 2>&1 || true
    done
}
stop_all
rm -rf "$ROOT"
trap stop_all EXIT
for port in "${PORTS[@]}"; do
    mkdir -p "$ROOT/$port/pgdata" && chown -R postgres "$ROOT"
    as_postgres "$BIN/initdb" -D "$ROOT/$port/pgdata" -A trust -U postgres >/dev/null
    # Citus' nodes reach each other over TCP on localhost.
    as_postgres "$BIN/pg_ctl" -D "$ROOT/$port/pgdata" -l "$ROOT/$port/postgres.log" -w \
        -o "-p $port -k /tmp -c listen_addresses=localhost -c shared_preload_libraries=citus" \
        start >/dev/null
done
on() { local port=$1; shift; as_postgres psql -h /tmp -p "$port" -U postgres -d postgres -X -v ON_ERROR_STOP=1 -qAt "$@"; }
fail() { echo "FAIL: $*" >&2; exit 1; }

for port in "${PORTS[@]}"; do
    on "$port" -c "CREATE EXTENSION citus" -c "CREATE EXTENSION airrep" >/dev/null
done
coordinator=${PORTS[0]}
on "$coordinator" >/dev/null <<SQL
SELECT citus_set_coordinator_host('localhost', $coordinator);
SELECT citus_add_node('localhost', ${PORTS[1]});
SELECT citus_add_node('localhost', ${PORTS[2]});
SQL

# 600 members in 3 groups of 3-dimensional vectors, a fixed target per group; the same rows
# in a local table (the single-node reference) and a distributed one (sharded by id).
on "$coordinator" >/dev/null <<'SQL'
CREATE TABLE local_members AS
SELECT i AS id, i % 3 AS grp,
       format('[%s,%s,%s]', (i % 7) - 3, ((i * 5) % 11) / 4.0, ((i * 13) % 17) / 8.0 - 1)::airrep_vector AS member,
       format('[%s,0.5,-1]', (i % 3) - 1)::airrep_vector AS target
FROM generate_series(1, 600) i;
CREATE TABLE members (LIKE local_members);
SELECT create_distributed_table('members', 'id', shard_count => 8);
INSERT INTO members SELECT * FROM local_members;
SQL
[ "$(on "$coordinator" -c "SELECT count(DISTINCT nodeport) FROM pg_dist_shard_placement")" = 2 ] ||
    fail "the shards are not on both workers"

# Grouped by a column that is not the distribution column: the aggregates must be computed
# in part on the workers and combined on the coordinator.
query() {
    echo "SELECT grp, group_influence(target, member) AS attention,
                 group_influence(target, member, 'sum') AS summed,
                 sum(member) AS total, avg(member) AS mean
          FROM $1 GROUP BY grp ORDER BY grp"
}
plan=$(on "$coordinator" -c "EXPLAIN (VERBOSE, COSTS OFF) $(query members)")
for aggregate in "group_influence(" "sum(" "avg("; do
    grep -q "worker_partial_agg.*$aggregate" <<<"$plan" ||
        fail "$aggregate is not pushed down to the workers:
$plan"
done
# The coordinator names the aggregates by oid: one coord_combine_agg per aggregate.
combined=$( (grep -m1 "coord_combine_agg" <<<"$plan" || true) | grep -o "coord_combine_agg(" | wc -l)
[ "$combined" = 4 ] || fail "$combined of 4 partial states are combined on the coordinator:
$plan"

# The distributed results equal the single-node ones (within float rounding: the partial
# states combine in another order).
mismatches=$(on "$coordinator" -c "
    SELECT count(*) FROM ($(query members)) d JOIN ($(query local_members)) l USING (grp)
    WHERE abs(d.attention - l.attention) > 1e-9 * greatest(1, abs(l.attention))
       OR abs(d.summed - l.summed) > 1e-9 * greatest(1, abs(l.summed))
       OR (d.total <-> l.total) > 1e-5 * greatest(1, airrep_norm(l.total))
       OR (d.mean <-> l.mean) > 1e-6 * greatest(1, airrep_norm(l.mean))")
groups=$(on "$coordinator" -c "SELECT count(*) FROM ($(query members)) d")
[ "$mismatches" = 0 ] && [ "$groups" = 3 ] ||
    fail "distributed results differ from a single node's ($mismatches of $groups groups)"
# Without GROUP BY too (one partial state per shard, combined once).
[ "$(on "$coordinator" -c "SELECT abs((SELECT group_influence('[1,2,3]', member) FROM members)
                                     - (SELECT group_influence('[1,2,3]', member) FROM local_members)) < 1e-9")" = t ] ||
    fail "the ungrouped distributed result differs from a single node's"
# A target that changes within a group is still an error, not a silent mix.
if on "$coordinator" -c "SELECT group_influence(member, member) FROM members" >/dev/null 2>"$ROOT/error"; then
    fail "a changing target was accepted on the cluster"
fi
grep -q "target changed within a group" "$ROOT/error" || fail "unexpected error: $(cat "$ROOT/error")"
echo "citus: group_influence, sum and avg pushed down to 2 workers; results equal a single node's"
