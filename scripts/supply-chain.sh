#!/usr/bin/env bash
# Supply chain: `cargo deny check` against deny.toml — RustSec advisories, licences, duplicate
# versions, sources. Installs cargo-deny (pinned) if missing.
#
# The RustSec advisory database is taken from ADVISORY_DB_MIRROR (a git repository of
# rustsec/advisory-db; default: the machine's mirror under /work/.mirror) when there is one, else
# fetched from GitHub by cargo-deny; with neither, advisories are reported SKIPPED and the other
# checks still run. The database's date is printed so a stale copy is visible.
set -euo pipefail
cd "$(dirname "$0")/.."
version=0.20.2
if ! cargo deny --version 2>/dev/null | grep -q " $version\$"; then
    cargo install --locked "cargo-deny@$version"
fi
# Where cargo-deny $version keeps the default database (its name is derived from the URL).
db="${CARGO_HOME:-$HOME/.cargo}/advisory-dbs/advisory-db-3157b0e258782691"
mirror="${ADVISORY_DB_MIRROR:-/work/.mirror/rustsec+advisory-db/repo}"
if [ -d "$mirror" ]; then
    if [ -d "$db/.git" ]; then
        git -C "$db" fetch -q "$mirror" HEAD && git -C "$db" reset -q --hard FETCH_HEAD
    else
        rm -rf "$db" && mkdir -p "$(dirname "$db")" && git clone -q "$mirror" "$db"
    fi
    echo "advisory database: copied from $mirror"
elif ! timeout 120 cargo deny fetch db >/dev/null 2>&1; then
    echo "advisory database: GitHub not reachable"
fi
if [ -d "$db/.git" ]; then
    echo "advisory database as of $(git -C "$db" log -1 --format=%cs)"
    cargo deny --offline --locked check --hide-inclusion-graph --show-stats
else
    echo "advisories SKIPPED: no copy of the RustSec database (set ADVISORY_DB_MIRROR)"
    cargo deny --offline --locked check --hide-inclusion-graph --show-stats bans licenses sources
fi
