#!/usr/bin/env bash
# The API contract, checked by machines against a seeded demo server: the served OpenAPI
# document validates (openapi-spec-validator), and schemathesis sends generated requests to every
# operation as a patient, a staff member, a researcher and an operator, checking that no answer
# is a server error, every status is documented and every body matches its schema.
#
#   bash scripts/contract.sh                 # 20 examples per operation, 50 stateful scenarios, 5 minutes at most
#   CONTRACT_EXAMPLES=5 CONTRACT_SCENARIOS=20 CONTRACT_SECONDS=120 bash scripts/contract.sh
#   CONTRACT_ROLES="researcher" CONTRACT_LOGS=/tmp/st bash scripts/contract.sh   # one role, logs kept
set -euo pipefail
cd "$(dirname "$0")/.."
examples="${CONTRACT_EXAMPLES:-20}"
scenarios="${CONTRACT_SCENARIOS:-50}"
budget="${CONTRACT_SECONDS:-300}"
bin=$(bash scripts/venv.sh)
cargo build --locked -q -p kura-cli
kura=target/debug/kura
dir=$(mktemp -d)
port=$((20000 + RANDOM % 20000))
trap 'kill "${server:-}" 2>/dev/null || true; rm -rf "$dir"' EXIT

"$kura" demo --seed-only --json --data-dir "$dir/data" > "$dir/accounts.json"
KURA_DISCLOSURE_K=1 "$kura" serve --data-dir "$dir/data" --listen "127.0.0.1:$port" > "$dir/serve.log" 2>&1 &
server=$!
base="http://127.0.0.1:$port"
for _ in $(seq 1 100); do curl -fs "$base/healthz" >/dev/null && break; sleep 0.2; done

curl -fs "$base/api/v1/openapi.json" > "$dir/openapi.json"
"$bin/openapi-spec-validator" "$dir/openapi.json"

# One bearer token per role, from the demo's accounts.
"$bin/python" - "$dir/accounts.json" "$base" > "$dir/tokens" <<'PY'
import json, sys, urllib.request
accounts = json.load(open(sys.argv[1]))["accounts"]
for role in ("patient", "staff", "researcher", "operator"):
    account = next(a for a in accounts if a["role"] == role)
    request = urllib.request.Request(
        sys.argv[2] + "/api/v1/auth/login",
        data=json.dumps({"username": account["username"], "password": account["password"]}).encode(),
        headers={"content-type": "application/json"},
    )
    print(role, json.load(urllib.request.urlopen(request))["token"])
PY

# Examples per operation for the stateless phases; the stateful phase follows the document's
# links (a record uploaded, then read, transferred, copied …) for its own number of scenarios.
cat > "$dir/schemathesis.toml" <<TOML
[generation]
max-examples = $examples
[phases.stateful]
max-steps = 8
[phases.stateful.generation]
max-examples = $scenarios
TOML

started=$SECONDS
failed=0
roles="${CONTRACT_ROLES:-patient staff researcher operator}"
logs="${CONTRACT_LOGS:-$dir}"
mkdir -p "$logs"
while read -r role token; do
    case " $roles " in *" $role "*) ;; *) continue ;; esac
    left=$((budget - (SECONDS - started)))
    if [ "$left" -le 10 ]; then
        echo "contract: the time budget ($budget s) ran out before the $role run" >&2
        failed=1
        break
    fi
    echo "== schemathesis as $role ($examples examples per operation, ${left}s left)"
    role_started=$SECONDS
    timeout "$left" "$bin/schemathesis" --config-file "$dir/schemathesis.toml" run "$base/api/v1/openapi.json" \
        --url "$base" \
        --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance \
        --seed 42 --generation-deterministic \
        --header "Authorization: Bearer $token" \
        --request-timeout 10 --no-color \
        > "$logs/st-$role.log" 2>&1 || { failed=1; echo "contract: failures as $role:"; tail -n 80 "$logs/st-$role.log"; }
    grep -E "^(API Operations|Test Phases|Test cases|Summary|  [A-Za-z]|[0-9]+ )" "$logs/st-$role.log" | tail -n 12 || true
    echo "   ($role took $((SECONDS - role_started)) s)"
done < "$dir/tokens"
if grep -qi "panicked" "$dir/serve.log"; then
    echo "contract: the server panicked" >&2
    failed=1
fi
exit "$failed"
