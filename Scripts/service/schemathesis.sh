#!/usr/bin/env bash
# Runs schemathesis (PyPI) against openapi.yaml and a live `permafrost serve` on loopback, over the
# shipped base model and the demo's signed guard. Fails on any 5xx or schema-violating response.
#
#   Scripts/service/schemathesis.sh [PERMAFROST_BINARY] [MAX_EXAMPLES]
#
# Needs: pip install schemathesis
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${1:-.build/debug/permafrost}
EXAMPLES=${2:-50}
DATA=$(mktemp -d)
TOKEN=$("$BIN" serve tokens create --data "$DATA" --name schemathesis --quiet)
"$BIN" serve start --data "$DATA" --base Models/base-0-5 --guard docs/results/demo/guard.json \
    --publisher-key docs/results/demo/publisher.pub --port 0 --max-steps 5 --log-level warning > "$DATA/out" 2> "$DATA/err" &
PID=$!
# A server still training a fuzzed job may take its time to stop: wait 5 s, then end it.
trap 'kill $PID 2>/dev/null || true; for _ in $(seq 1 10); do kill -0 $PID 2>/dev/null || break; sleep 0.5; done; kill -9 $PID 2>/dev/null || true; rm -rf "$DATA"' EXIT
for _ in $(seq 1 100); do grep -q "listening on" "$DATA/out" 2>/dev/null && break; sleep 0.2; done
URL=$(grep -o "http://[0-9.]*:[0-9]*" "$DATA/out")
echo "server at $URL"
# One real upload, so that job operations also meet valid ids.
python3 - "$URL" "$TOKEN" <<'PY'
import gzip, json, sys, urllib.request
url, token = sys.argv[1], sys.argv[2]
images = gzip.open("Data/mnist/t10k-images-idx3-ubyte.gz").read()[: 16 + 64 * 784]
images = images[:4] + (64).to_bytes(4, "big") + images[8:]
labels = gzip.open("Data/mnist/t10k-labels-idx1-ubyte.gz").read()[: 8 + 64]
labels = labels[:4] + (64).to_bytes(4, "big") + labels[8:]
boundary = "schemathesis-seed"
body = b"".join(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{n}\"\r\n\r\n".encode() + d + b"\r\n" for n, d in [("images", images), ("labels", labels)]) + f"--{boundary}--\r\n".encode()
request = urllib.request.Request(url + "/v1/uploads?name=seed", data=body, method="POST",
                                 headers={"Authorization": "Bearer " + token, "Content-Type": "multipart/form-data; boundary=" + boundary})
print("seed upload:", json.load(urllib.request.urlopen(request))["id"])
PY
schemathesis run openapi.yaml --url "$URL" -H "Authorization: Bearer $TOKEN" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance \
    --max-examples "$EXAMPLES" --phases examples,coverage,fuzzing
