#!/usr/bin/env bash
# ssegate vs nginx: SSE latency, CPU and memory per stream, stream capacity, plain requests.
#
#   bench/run.sh            full run (about 12 minutes on 2 cores); writes bench/results/
#   bench/run.sh --smoke    ~30 s check for CI: fails if a path delivers no events or loses streams
#
# Three paths to one upstream (`sse-load upstream`): direct (client → upstream), nginx and
# ssegate. Every proxied run starts a fresh proxy, so idle RSS is measured before any stream and
# no run inherits another's memory. Per run, `sse-load client` measures event latency (receive
# time minus the send time stamped in each event), failures and losses, plus the proxy's CPU
# seconds over the measured window and its RSS before the first stream and at the window's end
# (`--watch-pid`: nginx master + workers, ssegate's one process). `sse-load compare` turns the
# raw JSON lines into the Markdown table.
#
# CPU pinning (2 cores): the proxy under test runs on CPU 1, alone; the load (upstream, client,
# wrk) shares CPU 0. So the proxy never competes with the load generator for a core, both proxies
# get exactly the same core, and the direct path runs the same load on the same CPU 0. nginx
# runs PROXY_THREADS workers and ssegate PROXY_THREADS threads (default 1: one event loop for the
# one core each proxy gets, the configuration both recommend: a worker or thread per core). With fewer than 2
# CPUs nothing is pinned.
#
# Fairness settings: access logs off on both (nginx `access_log off`, ssegate RUST_LOG=warn, which
# silences its info-level access lines on stderr); nginx gets the usual SSE settings
# (proxy_buffering off, HTTP/1.1 and keep-alive to the upstream, long read timeout) and
# keep-alive limits raised so that neither proxy reconnects during wrk.
#
# Environment overrides (full run): REPS (2), DURATION (20 s window per run), RATE (10 events/s
# per stream), TOP_STREAMS (10 000, capped by the fd limit), TOP_RATE (2 events/s), LADDER
# ("2000 5000", extra stream counts at TOP_RATE for the capacity probe), WRK_SECS (10),
# PROXY_THREADS (1), SKIP_BUILD=1, SSEGATE_BIN, PORT_BASE (19180).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

mode=full
case "${1:-}" in
  --smoke) mode=smoke ;;
  "") ;;
  *) echo "usage: bench/run.sh [--smoke]" >&2; exit 2 ;;
esac

# --- tools -----------------------------------------------------------------------------------
missing=()
command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || missing+=(nginx)
command -v wrk >/dev/null || missing+=(wrk)
if ((${#missing[@]})); then
  echo "bench: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
# Debian starts an nginx service on install; ours runs on its own ports and prefix, so it does
# not matter, but a stock server on :80 is not ours to stop.

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
  cargo build --release --quiet -p ssegate -p ssegate-bench
fi
load="$root/target/release/sse-load"
ssegate="${SSEGATE_BIN:-$root/target/release/ssegate}"

# --- limits, ports, work dir -----------------------------------------------------------------
hard=$(ulimit -Hn)
[[ $hard == unlimited ]] && hard=1048576
ulimit -n "$hard"
nofile=$(ulimit -n)
port_base=${PORT_BASE:-19180}
up_port=$port_base
nginx_port=$((port_base + 1))
ssegate_port=$((port_base + 2))
metrics_port=$((port_base + 3))
for p in "$up_port" "$nginx_port" "$ssegate_port" "$metrics_port"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    echo "bench: port $p is in use; set PORT_BASE" >&2
    exit 1
  fi
done

proxy_threads=${PROXY_THREADS:-1}
if (($(nproc) >= 2)); then
  load_cpu=(taskset -c 0)
  proxy_cpu=(taskset -c 1)
  pinning="proxy alone on CPU 1 (nginx: $proxy_threads workers, ssegate: $proxy_threads threads); upstream, client and wrk on CPU 0"
else
  load_cpu=()
  proxy_cpu=()
  pinning="not pinned (fewer than 2 CPUs)"
fi

work=$(mktemp -d /tmp/ssegate-bench.XXXXXX)
# The background processes this script runs: the upstream and at most one proxy at a time. Only
# live ones are kept, so that cleanup never signals a pid that another process has since taken.
upstream_pid=""
proxy_pid=""
# stop PID SIGNAL: signal a child, give it 10 s to exit, then SIGKILL; reap it.
stop() {
  local pid=$1 i state
  kill -"$2" "$pid" 2>/dev/null || true
  for i in $(seq 1 100); do
    state=$(awk '{ sub(/^.*\) /, ""); print $1 }' "/proc/$pid/stat" 2>/dev/null || echo gone)
    [[ $state == gone || $state == Z ]] && break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  # SIGINT is a fast shutdown for both proxies; the upstream (started in the background of a
  # non-interactive shell, which ignores SIGINT there) gets SIGTERM.
  [[ -n "$proxy_pid" ]] && stop "$proxy_pid" INT
  [[ -n "$upstream_pid" ]] && stop "$upstream_pid" TERM
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_port() {
  local i
  for i in $(seq 1 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "bench: nothing listens on port $1" >&2
  return 1
}

children_of() {
  # pids whose parent is $1 (no procps needed)
  awk -v parent="$1" '{ sub(/^.*\) /, ""); if ($2 == parent) { split(FILENAME, f, "/"); print f[3] } }' \
    /proc/[0-9]*/stat 2>/dev/null || true
}

# --- configs ---------------------------------------------------------------------------------
mkdir -p "$work/nginx"
user_line=""
[[ $(id -u) == 0 ]] && user_line="user root;"
cat > "$work/nginx/nginx.conf" <<NGINX
# Generated by bench/run.sh.
$user_line
worker_processes $proxy_threads;
worker_rlimit_nofile $nofile;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events {
  worker_connections $nofile;
}
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path $work/nginx/client_body;
  proxy_temp_path $work/nginx/proxy;
  fastcgi_temp_path $work/nginx/fastcgi;
  uwsgi_temp_path $work/nginx/uwsgi;
  scgi_temp_path $work/nginx/scgi;
  upstream load {
    server 127.0.0.1:$up_port;
    keepalive 128;                 # as Pingora's default upstream pool size
    keepalive_requests 1000000;
  }
  server {
    listen 127.0.0.1:$nginx_port backlog=8192;
    location /sse {
      proxy_pass http://load;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_read_timeout 1h;
    }
    location /plain {
      proxy_pass http://load;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
NGINX
cat > "$work/ssegate.yaml" <<YAML
# Generated by bench/run.sh.
pingora:
  threads: $proxy_threads
  pid_file: $work/ssegate.pid
  upgrade_sock: $work/ssegate-upgrade.sock
  grace_period_seconds: 1
  graceful_shutdown_timeout_seconds: 1
listeners:
  - address: 127.0.0.1:$ssegate_port
metrics:
  address: 127.0.0.1:$metrics_port
upstreams:
  load:
    peers: [127.0.0.1:$up_port]
routes:
  - { name: sse, match: { path_prefix: /sse }, upstream: load, sse: true }
  - { name: plain, match: { path_prefix: /plain }, upstream: load }
YAML
"$nginx_bin" -t -q -p "$work/nginx" -c "$work/nginx/nginx.conf" -g 'daemon off;'
"$ssegate" -t -c "$work/ssegate.yaml" >/dev/null

# --- processes -------------------------------------------------------------------------------
"${load_cpu[@]}" "$load" upstream --listen "127.0.0.1:$up_port" 2>"$work/upstream.log" &
upstream_pid=$!
wait_port "$up_port"

proxy_pids=""   # comma-separated, for --watch-pid
start_proxy() {
  case "$1" in
    direct)
      proxy_pid=""
      proxy_pids=""
      port=$up_port
      ;;
    nginx)
      "${proxy_cpu[@]}" "$nginx_bin" -p "$work/nginx" -c "$work/nginx/nginx.conf" \
        -g 'daemon off;' 2>>"$work/nginx/stderr.log" &
      proxy_pid=$!
      port=$nginx_port
      wait_port "$port"
      local workers="" i
      for i in $(seq 1 100); do
        workers=$(children_of "$proxy_pid" | tr '\n' ',')
        [[ $(tr -cd ',' <<<"$workers" | wc -c) -ge 2 ]] && break
        sleep 0.05
      done
      proxy_pids="$proxy_pid,${workers%,}"
      ;;
    ssegate)
      RUST_LOG=warn "${proxy_cpu[@]}" "$ssegate" -c "$work/ssegate.yaml" 2>>"$work/ssegate.log" &
      proxy_pid=$!
      port=$ssegate_port
      wait_port "$port"
      proxy_pids=$proxy_pid
      ;;
  esac
}
stop_proxy() {
  [[ -z "${proxy_pid:-}" ]] && return 0
  # SIGINT: Pingora's fast shutdown; nginx treats it as a fast shutdown too.
  stop "$proxy_pid" INT
  proxy_pid=""
}

raw="$work/raw.jsonl"
: > "$raw"

json_field() { grep -o "\"$1\":[^,}]*" <<<"$2" | head -1 | cut -d: -f2; }

# run_sse PATH STREAMS RATE PHASE REP
run_sse() {
  local path=$1 streams=$2 rate=$3 phase=$4 rep=$5 line watch=()
  start_proxy "$path"
  [[ -n "$proxy_pids" ]] && watch=(--watch-pid "$proxy_pids")
  line=$("${load_cpu[@]}" "$load" client \
    --url "http://127.0.0.1:$port/sse?interval_ms=$((1000 / rate))" \
    --streams "$streams" --duration-secs "$duration" --json "${watch[@]}" \
    --tag "path=$path" --tag "rate=$rate" --tag "phase=$phase" --tag "rep=$rep" \
    2>>"$work/client.log" | tail -1)
  stop_proxy
  echo "$line" >> "$raw"
  printf '  %-8s %6s streams × %2s/s  run %s: p50 %7.3f ms  p99 %7.3f ms  %8.0f ev/s  failed %s  missing %s\n' \
    "$path" "$streams" "$rate" "$rep" \
    "$(awk -v v="$(json_field p50_us "$line")" 'BEGIN{print v/1000}')" \
    "$(awk -v v="$(json_field p99_us "$line")" 'BEGIN{print v/1000}')" \
    "$(json_field events_per_sec "$line")" "$(json_field streams_failed "$line")" \
    "$(json_field missing "$line")"
}

# cpu_ticks PID... : user + system clock ticks of the processes so far
cpu_ticks() {
  local total=0 pid t
  for pid in "$@"; do
    t=$(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$pid/stat" 2>/dev/null || echo 0)
    total=$((total + t))
  done
  echo "$total"
}

# run_wrk PATH REP
run_wrk() {
  local path=$1 rep=$2 out="$work/wrk-$1-$2.txt" before after line
  start_proxy "$path"
  local pids=()
  [[ -n "$proxy_pids" ]] && IFS=, read -r -a pids <<<"$proxy_pids"
  before=$(cpu_ticks "${pids[@]}")
  "${load_cpu[@]}" wrk -t1 -c50 -d"${wrk_secs}s" --latency "http://127.0.0.1:$port/plain" > "$out"
  after=$(cpu_ticks "${pids[@]}")
  stop_proxy
  line=$(awk -v path="$path" -v rep="$rep" -v cmd="wrk -t1 -c50 -d${wrk_secs}s" \
    -v cpu="$(awk -v t=$((after - before)) -v k="$(getconf CLK_TCK)" 'BEGIN { print t / k }')" '
    function us(v) { if (v ~ /us$/) return v + 0; if (v ~ /ms$/) return (v + 0) * 1000;
                     if (v ~ /m$/) return (v + 0) * 60e6; if (v ~ /s$/) return (v + 0) * 1e6; return v + 0 }
    $1 == "50%" { p50 = us($2) }
    $1 == "99%" { p99 = us($2) }
    /requests in/ { requests = $1 }
    /^Requests\/sec:/ { rps = $2 }
    /Non-2xx or 3xx responses:/ { non2xx = $NF }
    /Socket errors:/ { gsub(/,/, ""); errors = $4 + $6 + $8 + $10 }
    END { printf "{\"kind\":\"wrk\",\"tags\":{\"path\":\"%s\",\"rep\":\"%s\",\"cmd\":\"%s\"},\"requests_per_sec\":%s,\"p50_us\":%s,\"p99_us\":%s,\"requests\":%d,\"errors\":%d,\"non_2xx\":%d,\"proxy_cpu_secs\":%s}\n",
              path, rep, cmd, rps + 0, p50 + 0, p99 + 0, requests + 0, errors + 0, non2xx + 0, cpu + 0 }
  ' "$out")
  echo "$line" >> "$raw"
  printf '  %-8s wrk -c50             run %s: %8.0f req/s  p99 %7.3f ms  proxy cpu %s s\n' \
    "$path" "$rep" "$(json_field requests_per_sec "$line")" \
    "$(awk -v v="$(json_field p99_us "$line")" 'BEGIN{print v/1000}')" \
    "$(json_field proxy_cpu_secs "$line")"
}

# --- the runs --------------------------------------------------------------------------------
begin=$(date +%s)
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
paths=(direct nginx ssegate)
if [[ $mode == smoke ]]; then
  reps=1
  duration=4
  wrk_secs=2
  scenarios=("50 10")
  ladder=()
  top_note=""
else
  reps=${REPS:-2}
  duration=${DURATION:-20}
  wrk_secs=${WRK_SECS:-10}
  rate=${RATE:-10}
  # A proxy holds two descriptors per stream (client and upstream side) in one process.
  top=${TOP_STREAMS:-10000}
  fd_cap=$(( (nofile - 500) / 2 / 500 * 500 ))
  top_note=""
  if ((top > fd_cap)); then
    top_note="top scenario at $fd_cap streams instead of $top: RLIMIT_NOFILE hard limit is $nofile and a proxy needs 2 descriptors per stream"
    top=$fd_cap
  fi
  top_rate=${TOP_RATE:-2}
  scenarios=("1 $rate" "1000 $rate" "$top $top_rate")
  read -r -a ladder <<<"${LADDER:-2000 5000}"
fi

echo "bench: $mode run, $(nproc) CPUs, pinning: $pinning; work dir $work"
for rep in $(seq 1 "$reps"); do
  for s in "${scenarios[@]}"; do
    read -r streams r <<<"$s"
    for path in "${paths[@]}"; do
      run_sse "$path" "$streams" "$r" main "$rep"
    done
  done
done
for streams in "${ladder[@]}"; do
  for path in "${paths[@]}"; do
    run_sse "$path" "$streams" "${top_rate}" ladder 1
  done
done
for rep in $(seq 1 "$reps"); do
  for path in "${paths[@]}"; do
    run_wrk "$path" "$rep"
  done
done
elapsed=$(($(date +%s) - begin))
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

# --- the table -------------------------------------------------------------------------------
notes=(
  "$(date -u '+%Y-%m-%d %H:%M UTC'), $mode run, $elapsed s"
  "machine: $(nproc) CPUs ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), $(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM, Linux $(uname -r), RLIMIT_NOFILE $nofile"
  "versions: $("$nginx_bin" -v 2>&1 | sed 's/^nginx version: //'), $("$ssegate" --version 2>&1 | head -1), git $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  "pinning: $pinning"
  "load average before / after: $load_before / $load_after (other work on the machine skews every figure; a proxy that falls behind while its CPU share stays well under 100 % was starved, not saturated)"
  "each SSE run: fresh proxy, streams opened at 2000/s, warm-up = ramp + 2 s, then a ${duration} s measured window; upstream events carry a 0-byte pad"
  "access logs off on both: nginx \`access_log off\`, ssegate RUST_LOG=warn (its access lines are info-level on stderr)"
)
if [[ $mode == full ]]; then
  notes+=("scenarios: 1 and 1000 streams at $rate events/s per stream; $top streams at $top_rate events/s per stream (the load generator shares one core and cannot produce $((top * rate)) events/s; at $top_rate/s it stays well below saturation); capacity ladder adds ${ladder[*]} streams at $top_rate/s")
  [[ -n "$top_note" ]] && notes+=("$top_note")
fi
note_args=()
for n in "${notes[@]}"; do note_args+=(--note "$n"); done

if [[ $mode == smoke ]]; then
  "$load" compare --input "$raw" --title "ssegate vs nginx: SSE benchmark (smoke)" "${note_args[@]}" --check
else
  mkdir -p bench/results
  stamp=$(date -u +%Y%m%dT%H%M%SZ)
  cp "$raw" "bench/results/raw-$stamp.jsonl"
  "$load" compare --input "$raw" "${note_args[@]}" > bench/results/latest.md
  cp bench/results/latest.md "bench/results/$stamp.md"
  cat bench/results/latest.md
  echo "bench: wrote bench/results/latest.md, bench/results/$stamp.md and bench/results/raw-$stamp.jsonl"
fi
