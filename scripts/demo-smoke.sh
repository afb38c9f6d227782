#!/usr/bin/env bash
# Smoke test of the README's run command: seed the demo into a temporary data directory, serve
# it, and log in as a demo patient over HTTP. Stops the server however it ends.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --locked -p kura-cli
kura=target/debug/kura
dir=$(mktemp -d)
port=$((20000 + RANDOM % 20000))
trap 'kill "${server:-}" 2>/dev/null || true; rm -rf "$dir"' EXIT

"$kura" demo --seed-only --json --data-dir "$dir/data" > "$dir/accounts.json"
"$kura" serve --data-dir "$dir/data" --listen "127.0.0.1:$port" > "$dir/serve.log" 2>&1 &
server=$!

python3 - "$dir/accounts.json" "$port" <<'PY'
import json, sys, time, urllib.request

accounts = json.load(open(sys.argv[1]))["accounts"]
base = f"http://127.0.0.1:{sys.argv[2]}"
for _ in range(100):
    try:
        if urllib.request.urlopen(base + "/healthz").status == 200:
            break
    except OSError:
        time.sleep(0.2)
else:
    sys.exit("the demo server did not come up")

roles = {a["role"] for a in accounts}
assert {"operator", "staff", "researcher", "patient", "guardian"} <= roles, roles
patient = next(a for a in accounts if a["role"] == "patient" and a.get("mrns"))
login = urllib.request.Request(
    base + "/api/v1/auth/login",
    data=json.dumps({"username": patient["username"], "password": patient["password"]}).encode(),
    headers={"content-type": "application/json"},
)
token = json.load(urllib.request.urlopen(login))["token"]
mine = urllib.request.Request(base + "/api/v1/records", headers={"authorization": "Bearer " + token})
records = json.load(urllib.request.urlopen(mine))["records"]
print(f"demo smoke: {len(accounts)} accounts; {patient['username']} sees {len(records)} records")
PY
