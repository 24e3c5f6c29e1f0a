#!/usr/bin/env bash
# Several ssegate instances behind HAProxy, under load, through what a fleet goes through:
# an instance added, a rolling upgrade, an instance killed, an instance restarted. Not a test: a
# measurement, with the targets checked at the end. Everything runs on 127.0.0.1.
#
#   scripts/scale-out.sh [CLIENTS] [MAX_LIFETIME_SECONDS]     (defaults: 120 and 20)
#
# - HAProxy in TCP mode (bench/scale-out/haproxy.cfg.in): leastconn, health checks on each
#   instance's GET /healthz.
# - Instances a, b, c: one thread each, sse.max_lifetime on the streaming route, each with an
#   upstream address of its own in one demo upstream process, so that the load can tell from the
#   events which instance a stream is on.
# - The load (examples/scale_load.rs): CLIENTS EventSource-like clients at 10 events/s each,
#   which reconnect after retry: with Last-Event-ID, and plain requests in a loop.
#
# Steps: a and b serve; c starts (scale-out) and one max_lifetime passes; each instance is
# upgraded in turn (ssegate -u, then SIGQUIT to the old process, which drains with retry:); b is
# killed with SIGKILL; b starts again and one max_lifetime passes.
#
# Writes bench/results/<UTC time>-scale-out.md: one row per step and the open streams per
# instance over time. Exits non-zero if a target is missed:
# - every step but the kill: no failed plain request, no lost or repeated event, no stream that
#   broke off;
# - the kill: only b's streams break off, each is back within 5 s, nothing lost or repeated;
# - one max_lifetime after c starts, and after b restarts: open streams per instance within
#   15 % of even.
set -euo pipefail
cd "$(dirname "$0")/.."
clients=${1:-120}
lifetime=${2:-20}
cargo build --release --quiet --bin ssegate --example demo_upstream --example scale_load
bin=./target/release/ssegate

work=$(mktemp -d)
front=127.0.0.1:18500
stats=127.0.0.1:18501
declare -A port=([a]=18510 [b]=18520 [c]=18530)
# The process serving each instance now (a pid file is written in daemon mode only).
declare -A serving=()
pids=()
cleanup() {
  local status=$?
  if ((status != 0)); then
    for log in "$work"/*.log; do echo "--- $log" >&2; tail -5 "$log" >&2; done
  fi
  kill -INT "${serving[@]}" 2>/dev/null || true
  kill "${pids[@]}" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# Instance NAME: listener PORT, metrics PORT+1, its upstream PORT+2.
for name in a b c; do
  p=${port[$name]}
  cat > "$work/$name.yaml" <<YAML
pingora:
  threads: 1
  pid_file: $work/$name.pid
  upgrade_sock: $work/$name-upgrade.sock
  grace_period_seconds: 5
  graceful_shutdown_timeout_seconds: 2
listeners:
  - address: 127.0.0.1:$p
metrics:
  address: 127.0.0.1:$((p + 1))
shutdown:
  unready_delay: 2s
upstreams:
  demo:
    peers: [127.0.0.1:$((p + 2))]
routes:
  - name: clock
    match: { path_prefix: /clock }
    upstream: demo
    sse: { heartbeat: 15s, max_lifetime: ${lifetime}s }
  - name: web
    match: { path_prefix: / }
    upstream: demo
YAML
  "$bin" -t -c "$work/$name.yaml" >/dev/null
done

servers=""
for name in a b c; do
  servers+="    server $name 127.0.0.1:${port[$name]} check port $((port[$name] + 1))"$'\n'
done
awk -v front="$front" -v stats="$stats" -v servers="$servers" \
  '{ gsub("@FRONT@", front); gsub("@STATS@", stats)
     if ($0 == "@SERVERS@") printf "%s", servers; else print }' \
  bench/scale-out/haproxy.cfg.in > "$work/haproxy.cfg"
haproxy -c -q -f "$work/haproxy.cfg"

./target/release/examples/demo_upstream \
  "127.0.0.1:$((port[a] + 2))" "127.0.0.1:$((port[b] + 2))" "127.0.0.1:$((port[c] + 2))" \
  2>"$work/upstream.log" &
pids+=($!)
haproxy -db -f "$work/haproxy.cfg" 2>"$work/haproxy.log" &
pids+=($!)

# Waits until HAProxy's health checks see instance NAME as STATE (UP or DOWN; at most 10 s).
haproxy_sees() {
  for _ in $(seq 100); do
    [[ $(curl -s "http://$stats/stats;csv" |
      awk -F, -v name="$1" '$1 == "ssegate" && $2 == name { print $18 }') == "$2" ]] && return 0
    sleep 0.1
  done
  echo "scale-out: HAProxy does not see instance $1 $2" >&2
  return 1
}

# Waits until the instance's /healthz answers 200 (at most 10 s).
wait_healthy() {
  for _ in $(seq 100); do
    curl -sf -o /dev/null "http://127.0.0.1:$((port[$1] + 1))/healthz" && return 0
    sleep 0.1
  done
  echo "scale-out: instance $1 did not become healthy; its log:" >&2
  cat "$work/$1.log" >&2
  return 1
}
start() {
  RUST_LOG=warn "$bin" -c "$work/$1.yaml" 2>>"$work/$1.log" 3>&- &
  serving[$1]=$!
  wait_healthy "$1"
}
# A graceful upgrade of one instance, as scripts/upgrade.sh does it; returns once the old
# process has drained and exited.
upgrade() {
  local old=${serving[$1]}
  RUST_LOG=warn "$bin" -u -c "$work/$1.yaml" 2>>"$work/$1.log" 3>&- &
  serving[$1]=$!
  kill -QUIT "$old"
  wait "$old" || true
  wait_healthy "$1"
}

start a
start b
haproxy_sees a UP
haproxy_sees b UP
haproxy_sees c DOWN
upstreams=()
for name in a b c; do upstreams+=("$name=127.0.0.1:$((port[$name] + 2))"); done
mkfifo "$work/steps"
./target/release/examples/scale_load "$front" "$clients" "${upstreams[@]}" \
  < "$work/steps" > "$work/load.txt" &
load=$!
pids+=("$load")
# The load ends at the end of its input, so nothing started from here on may keep fd 3 open.
exec 3>"$work/steps"
step() { echo "scale-out: [$SECONDS s] $*" >&2; echo "$*" >&3; }

sleep 5
step "c starts"
start c
haproxy_sees c UP
sleep $((lifetime * 12 / 10))
for name in a b c; do
  step "upgrade $name"
  upgrade "$name"
done
step "kill -9 b"
kill -KILL "${serving[b]}"
haproxy_sees b DOWN
sleep 6
step "b starts again"
start b
haproxy_sees b UP
sleep $((lifetime * 12 / 10))
step "end"
exec 3>&-
wait "$load"

out=bench/results/$(date -u +%Y%m%dT%H%M%SZ)-scale-out.md
{
  echo "# Scale-out: 3 ssegate instances behind HAProxy"
  echo
  echo "\`scripts/scale-out.sh $clients $lifetime\`, $(nproc) cores, $(haproxy -v | head -1 | cut -d' ' -f1-3)."
  echo "$clients SSE clients at 10 events/s each that reconnect like EventSource, plus plain"
  echo "requests in a loop; sse.max_lifetime ${lifetime}s; grace period 5 s; unready_delay 2 s."
  echo "Gaps run from a stream's last event to the first event on its next connection."
  echo
  grep -v '^timeline' "$work/load.txt"
  echo
  echo "## Open streams per instance over time"
  echo
  echo "| second | step | a | b | c | between connections |"
  echo "|---|---|---|---|---|---|"
  awk '/^timeline/ && $2 % 2 == 0 {
    n = NF; step = $3; for (i = 4; i <= n - 4; i++) step = step " " $i
    printf "| %s | %s | %s | %s | %s | %s |\n", $2, step, $(n-3), $(n-2), $(n-1), $n }' \
    "$work/load.txt"
} > "$out"
cat "$out"

# The targets, from the step rows (field 1 is empty, before the first bar): 2 step, 3 seconds,
# 4 plain ok, 5 plain failed, 6 events, 7 lost, 8 repeated, 9 ended with retry, 10 broke off,
# 11 no stream, 12 gaps, 13 gap after a break, 14 streams at the end, 15 spread from even.
awk -F' *\\| *' '
  /^\| (start|c starts|upgrade|kill|b starts|end) / {
    step = $2
    if ($7 != 0 || $8 != 0) { print "missed: " step ": " $7 " lost, " $8 " repeated"; bad = 1 }
    if (step ~ /^kill/) {
      if ($10 !~ /^b:[0-9]+$/) { print "missed: " step ": broke off " $10; bad = 1 }
      if ($13 == "-" || $13 + 0 > 5000) { print "missed: " step ": back after " $13 " ms"; bad = 1 }
    } else {
      if ($5 != 0) { print "missed: " step ": " $5 " plain requests failed"; bad = 1 }
      if ($10 != "0") { print "missed: " step ": broke off " $10; bad = 1 }
    }
    if ((step == "c starts" || step == "b starts again") && $15 + 0 > 15) {
      print "missed: " step ": streams " $14 ", " $15 " % from even"; bad = 1
    }
  }
  END { if (bad) exit 1; print "scale-out: every target met" }' "$out"
