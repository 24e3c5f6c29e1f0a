#!/usr/bin/env bash
# Runs the demo: the bundled SSE upstream on 127.0.0.1:9000 and ssegate on 127.0.0.1:8080.
# In another terminal: curl -N http://127.0.0.1:8080/clock
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin ssegate --example demo_upstream
./target/release/examples/demo_upstream 127.0.0.1:9000 &
upstream=$!
trap 'kill $upstream 2>/dev/null' EXIT
echo "ssegate on http://127.0.0.1:8080 — try: curl -N http://127.0.0.1:8080/clock"
./target/release/ssegate -c conf/demo.yaml
