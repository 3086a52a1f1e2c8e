#!/usr/bin/env bash
# Builds the third-party extensions that some tests need from ../shared/vendor (DESIGN
# section 4; neither is in Debian's archive): `scripts/vendor.sh pgvector|citus`. Prints
# why and succeeds without building when the source is absent, so callers skip their tests.
set -euo pipefail
VENDOR=${AIRREP_VENDOR:-$(cd "$(dirname "$0")/../.." && pwd)/shared/vendor}
PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
case "${1:-}" in
pgvector)
    if [ -f "$($PG_CONFIG --sharedir)/extension/vector.control" ]; then
        exit 0
    fi
    source=$(ls "$VENDOR"/pgvector-*.tar.gz 2>/dev/null | head -1 || true)
    if [ -z "$source" ]; then
        echo "pgvector: no source in $VENDOR; its tests and benchmark rows are skipped"
        exit 0
    fi
    build=$(mktemp -d)
    tar xzf "$source" -C "$build"
    make -s -C "$build"/pgvector-* OPTFLAGS="" PG_CONFIG="$PG_CONFIG" install >/dev/null
    rm -rf "$build"
    echo "pgvector: built and installed from $source"
    ;;
citus)
    if [ -f "$($PG_CONFIG --sharedir)/extension/citus.control" ]; then
        exit 0
    fi
    source=$(ls "$VENDOR"/citus-*.tar.gz 2>/dev/null | head -1 || true)
    if [ -z "$source" ]; then
        echo "citus: no source in $VENDOR; the distributed test is skipped"
        exit 0
    fi
    # Citus' build dependencies (../shared/vendor/README.md); 2-6 minutes on 2 cores.
    packages=(patch libcurl4-openssl-dev liblz4-dev libzstd-dev libkrb5-dev libselinux1-dev
        libxslt1-dev libpam0g-dev libssl-dev libreadline-dev)
    # (an unknown package's error line counts as missing too)
    missing=$(dpkg-query -W -f='${Status}\n' "${packages[@]}" 2>&1 | grep -cvx "install ok installed" || true)
    if [ "$missing" != 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >/dev/null
    fi
    build=$(mktemp -d)
    tar xzf "$source" -C "$build"
    (
        cd "$build"/citus-*
        for patch in "$VENDOR"/citus-*.patch; do
            [ -e "$patch" ] || continue  # none vendored
            patch -s -p1 <"$patch"
        done
        { ./configure PG_CONFIG="$PG_CONFIG" && make -j"$(nproc)" && make install; } >build.log 2>&1 ||
            { tail -40 build.log >&2; echo "citus: the build failed (last lines above)" >&2; exit 1; }
    )
    rm -rf "$build"
    echo "citus: built and installed from $source"
    ;;
*)
    echo "usage: $0 pgvector|citus" >&2
    exit 2
    ;;
esac
