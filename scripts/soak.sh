#!/usr/bin/env bash
# Soak: ssegate holds STREAMS SSE streams with churn (each stream lives a random 5..60 s, then
# reconnects at once) for DURATION seconds, while this script samples ssegate's RSS, open file
# descriptors and open streams every 10 s. A leak shows as RSS or fds that climb while the
# stream count stays level; at the end, with every stream closed, fds must be back at baseline.
#
#   scripts/soak.sh                 30 minutes, 1000 streams
#   DURATION=1200 scripts/soak.sh   20 minutes (the run docs/benchmark.md quotes); DURATION=120: a short one
#
# Writes the samples to target/soak/samples.csv and prints the first and last samples of the
# window, the peaks, and the baseline check. Exits non-zero if streams failed to reopen or fds
# did not return to baseline.
set -euo pipefail
cd "$(dirname "$0")/.."

duration=${DURATION:-1800}
streams=${STREAMS:-1000}
interval_ms=${INTERVAL_MS:-500}
port_base=${PORT_BASE:-19380}
up_port=$port_base
proxy_port=$((port_base + 1))
metrics_port=$((port_base + 2))

cargo build --release --quiet -p ssegate -p ssegate-bench
load=target/release/sse-load
out=target/soak
mkdir -p "$out"
ulimit -n "$(ulimit -Hn)"

cat >"$out/ssegate.yaml" <<EOF
pingora:
  threads: 2
  pid_file: $PWD/$out/ssegate.pid
  upgrade_sock: $PWD/$out/upgrade.sock
listeners:
  - address: 127.0.0.1:$proxy_port
metrics:
  address: 127.0.0.1:$metrics_port
upstreams:
  events:
    peers: [127.0.0.1:$up_port]
routes:
  - name: soak
    match: { path_prefix: /sse }
    upstream: events
    sse: { heartbeat: 15s }
EOF

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT

"$load" upstream --listen "127.0.0.1:$up_port" --interval-ms "$interval_ms" &
pids+=($!)
RUST_LOG=warn target/release/ssegate -c "$out/ssegate.yaml" 2>"$out/ssegate.log" &
gateway=$!
pids+=("$gateway")
for _ in $(seq 50); do
  curl -sf "http://127.0.0.1:$metrics_port/metrics" >/dev/null && break
  sleep 0.1
done

sample() {
  local rss fds active
  rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$gateway/status")
  fds=$(find "/proc/$gateway/fd" -mindepth 1 -maxdepth 1 | wc -l)
  active=$(curl -s "http://127.0.0.1:$metrics_port/metrics" |
    awk '/^ssegate_streams_active\{route="soak"\}/ {print $2}')
  echo "$(date +%s),$rss,$fds,${active:-0}"
}

baseline=$(sample)
echo "time,rss_kib,fds,streams_active" >"$out/samples.csv"
echo "$baseline" >>"$out/samples.csv"
echo "soak: $streams streams with churn for ${duration}s; baseline (time,rss_kib,fds,streams) $baseline"

"$load" client --url "http://127.0.0.1:$proxy_port/sse" --streams "$streams" \
  --lifetime-secs 5..60 --warmup-secs 10 --duration-secs "$duration" --report-every 60 \
  --json >"$out/client.json" &
client=$!
pids+=("$client")
while kill -0 "$client" 2>/dev/null; do
  sleep 10
  sample >>"$out/samples.csv"
done
client_status=0
wait "$client" || client_status=$?

sleep 5 # let the last closes settle
after=$(sample)
echo "$after" >>"$out/samples.csv"

# Samples taken while the streams were held (after the warm-up).
window=$(awk -F, -v s="$streams" 'NR > 2 && $4 >= s * 0.9' "$out/samples.csv")
first=$(head -1 <<<"$window")
last=$(tail -1 <<<"$window")
peak_rss=$(awk -F, 'max < $2 {max = $2} END {print max}' <<<"$window")
peak_fds=$(awk -F, 'max < $3 {max = $3} END {print max}' <<<"$window")
echo
echo "client summary: $(cat "$out/client.json")"
echo "first sample with streams held (time,rss_kib,fds,streams): $first"
echo "last sample with streams held:                             $last"
echo "peaks while held: rss ${peak_rss} KiB, fds ${peak_fds}"
echo "after all streams closed: $after (baseline $baseline)"

base_fds=$(cut -d, -f3 <<<"$baseline")
after_fds=$(cut -d, -f3 <<<"$after")
status=0
if ((after_fds > base_fds)); then
  echo "soak: FAIL: $after_fds fds open after the run, $base_fds before" >&2
  status=1
fi
if ((client_status != 0)); then
  echo "soak: FAIL: the load client reported failures (exit $client_status)" >&2
  status=1
fi
exit "$status"
