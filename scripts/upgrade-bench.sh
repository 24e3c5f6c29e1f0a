#!/usr/bin/env bash
# Ten graceful upgrades in a row under load: plain requests in a loop and 20 SSE clients that
# reconnect like EventSource. Prints failed requests, lost and repeated events, and the reconnect
# gap (p50/p99). Not a test: a measurement. Everything runs on 127.0.0.1.
#
#   scripts/upgrade-bench.sh [UPGRADES] [CLIENTS]
set -euo pipefail
cd "$(dirname "$0")/.."
upgrades=${1:-10}
clients=${2:-20}
cargo build --release --quiet --bin ssegate --example demo_upstream --example upgrade_load

work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
port=18480
cat > "$work/ssegate.yaml" <<YAML
pingora:
  threads: 2
  pid_file: $work/ssegate.pid
  upgrade_sock: $work/upgrade.sock
  grace_period_seconds: 3
  graceful_shutdown_timeout_seconds: 2
listeners:
  - address: 127.0.0.1:$port
metrics:
  address: 127.0.0.1:$((port + 1))
upstreams:
  demo:
    peers: [127.0.0.1:$((port + 2))]
routes:
  - { name: clock, match: { path_prefix: /clock }, upstream: demo, sse: true }
  - { name: web, match: { path_prefix: / }, upstream: demo }
YAML

./target/release/examples/demo_upstream "127.0.0.1:$((port + 2))" 2>/dev/null &
./target/release/ssegate -c "$work/ssegate.yaml" 2>"$work/0.log" &
old=$!
sleep 1

# Each upgrade takes ~5 s of overlap plus the 3 s grace period; run the load for all of them.
seconds=$((upgrades * 9 + 5))
./target/release/examples/upgrade_load "127.0.0.1:$port" "$seconds" "$clients" > "$work/load.txt" &
load=$!
sleep 2
for i in $(seq 1 "$upgrades"); do
  ./target/release/ssegate -u -c "$work/ssegate.yaml" 2>"$work/$i.log" &
  new=$!
  sleep 0.5
  kill -QUIT "$old"
  while kill -0 "$old" 2>/dev/null; do sleep 0.2; done
  echo "upgrade $i: process $old handed over to $new and exited"
  old=$new
done
wait "$load"
echo "--- $upgrades upgrades, $clients SSE clients, $(nproc) cores"
cat "$work/load.txt"
