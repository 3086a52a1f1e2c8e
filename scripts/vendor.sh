#!/usr/bin/env bash
# Builds the third-party extensions that some tests need from ../shared/vendor (DESIGN
# section 4; neither is in Debian's archive): `scripts/vendor.sh pgvector`. Prints why and
# succeeds without building when the source is absent, so callers skip their tests.
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
*)
    echo "usage: $0 pgvector" >&2
    exit 2
    ;;
esac
