#!/usr/bin/env bash
# Installs what building and testing airrep needs on a fresh Debian 12 machine, and nothing
# that is already there: safe to run any number of times. Sourced by test.sh and demo.sh.
set -euo pipefail

PGRX_VERSION=0.18.0
PG_MAJOR=15
PG_CONFIG=/usr/lib/postgresql/$PG_MAJOR/bin/pg_config
APT_PACKAGES=(postgresql-$PG_MAJOR postgresql-server-dev-$PG_MAJOR libclang-dev clang sudo unzip pkg-config)

missing=()
for package in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
    echo "==> apt-get install ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! cargo pgrx --version 2>/dev/null | grep -q " $PGRX_VERSION\$"; then
    # --debug: it only drives cargo and Postgres, and it compiles in half the time
    # (86 s against 187 s on 2 cores), which every fresh CI machine pays.
    echo "==> cargo install cargo-pgrx $PGRX_VERSION (a minute or two)"
    cargo install cargo-pgrx --version "$PGRX_VERSION" --locked --debug
fi

if ! grep -qs "pg$PG_MAJOR" "${PGRX_HOME:-$HOME/.pgrx}/config.toml"; then
    echo "==> cargo pgrx init --pg$PG_MAJOR"
    cargo pgrx init --pg$PG_MAJOR "$PG_CONFIG"
fi

# The extension is installed into Debian's Postgres, which the tests run as `postgres`.
# pgrx installs with sudo only when it cannot write there itself; as root it can.
