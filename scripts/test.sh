#!/usr/bin/env bash
# The test command (README): every crate's tests. On PostgreSQL when KURA_TEST_DATABASE_URL
# names a database the tests may create scratch databases next to; on SQLite otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --locked "$@"
