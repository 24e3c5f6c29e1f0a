#!/usr/bin/env bash
# ssegate vs nginx and bare Pingora: SSE latency, time to response head, CPU and memory per
# stream, memory after the streams close, stream capacity, TLS + HTTP/2, plain requests.
#
#   bench/run.sh            full run (about 40 minutes on 2 cores, 50 with base); writes
#                           bench/results/
#   bench/run.sh --smoke    < 1 minute check for CI: fails if a path delivers no events, loses
#                           events or streams, or a plain request fails
#
# Paths to one upstream (`sse-load upstream`):
#   direct   the client straight to the upstream (the load's own cost)
#   nginx    nginx with the usual SSE settings
#   floor    bare Pingora (bench/floor, `pingora-floor`): one ProxyHttp with a fixed peer, no
#            filters, no logging, Pingora's defaults; the engine's own floor under ssegate
#   ssegate  this repository's proxy
#   base     an older ssegate build (SSEGATE_BASE_BIN), same config; only when that is set
# Every proxied run starts a fresh proxy, so idle RSS is measured before any stream and no run
# inherits another's memory. Per run, `sse-load client` measures event latency (receive time
# minus the send time stamped in each event), time to each stream's response head, failures
# and losses, plus the proxy's CPU seconds over the measured window and its RSS before the
# first stream and at the window's end (`--watch-pid`: nginx master + workers, a Pingora
# proxy's one process). In the memory scenario the client also waits SETTLE_SECS after every
# stream has closed and reads the RSS again. `sse-load compare` turns the raw JSON lines into
# the Markdown table.
#
# Rounds: each of REPS rounds runs every scenario on every path, the paths one after another
# (interleaved), so that drift in the machine's load hits all paths alike; figures are medians
# over the rounds.
#
# CPU pinning (2 cores): the proxy under test runs on CPU 1, alone; the load (upstream, client,
# wrk) shares CPU 0. So the proxy never competes with the load generator for a core, every proxy
# gets exactly the same core, and the direct path runs the same load on the same CPU 0. nginx
# runs PROXY_THREADS workers, the Pingora proxies PROXY_THREADS threads (default 1: one event
# loop for the one core each proxy gets, the configuration all recommend: a worker or thread per
# core). With fewer than 2 CPUs nothing is pinned.
#
# Fairness settings: access logs off on nginx (`access_log off`) and ssegate (RUST_LOG=warn,
# which silences its info-level access lines on stderr); the floor logs nothing. nginx gets the
# usual SSE settings (proxy_buffering off, HTTP/1.1 and keep-alive to the upstream, long read
# timeout) and keep-alive limits raised so that no proxy reconnects during wrk.
#
# TLS + HTTP/2 (full run): a self-signed certificate made with the openssl CLI; nginx
# `listen ... ssl http2`, ssegate a `tls:` listener, the floor --tls-listen (TlsSettings::
# intermediate + h2), in the TLS runs only. TLS_STREAMS streams over TLS_CONNECTIONS HTTP/2 connections. Pingora's h2
# server allows 100 concurrent streams per connection (pingora-core's default_h2_options), so
# keep TLS_STREAMS / TLS_CONNECTIONS at 100 or below. No direct path: the upstream is plain.
#
# Environment (full run; defaults in brackets):
#   REPS [3]               rounds; every figure is the median over them
#   DURATION [20]          measured seconds per SSE run (after a warm-up of ramp + 2 s)
#   RATE [10]              events/s per stream of the 1- and 1000-stream scenarios
#   TOP_STREAMS [10000]    streams of the top scenario, capped by the fd limit (2 fds a stream)
#   TOP_RATE [2]           events/s per stream of the top scenario and of the ladder
#   SCENARIOS              STREAMS:RATE list [1:RATE 1000:RATE 5000:1 TOP_STREAMS:TOP_RATE]
#   MEMORY_SCENARIO [5000:1]  the scenario after which RSS is read again (if it is in SCENARIOS)
#   SETTLE_SECS [60]       seconds from the last stream's close to that reading
#   LADDER ["2000 5000"]   extra stream counts at TOP_RATE for the capacity table
#   PATHS                  paths to run [direct nginx floor ssegate, plus base if
#                          SSEGATE_BASE_BIN is set]
#   PROFILE                the cargo profile both proxies are built with [dist; smoke: release]
#   SSEGATE_BIN            ssegate binary [target/PROFILE/ssegate]
#   SSEGATE_BASE_BIN       an older ssegate binary, run as path `base` [unset: no base path]
#   FLOOR_BIN              pingora-floor binary [target/PROFILE/pingora-floor]
#   TLS_STREAMS [1000], TLS_CONNECTIONS [10], TLS_RATE [10]   the TLS + HTTP/2 scenario
#   WRK_SECS [10]          seconds per wrk run
#   PROXY_THREADS [1]      nginx workers / Pingora threads
#   SKIP_WRK=1, SKIP_LADDER=1, SKIP_TLS=1   leave those parts out
#   SKIP_BUILD=1           use the binaries as they are
#   PORT_BASE [19180]      eight ports from there
# A run with SCENARIOS, PATHS or a SKIP_WRK/LADDER/TLS set is partial: its table goes to
# bench/results/partial.md (raw lines: partial.jsonl), not latest.md. Smoke runs take only
# PATHS, PROXY_THREADS, SKIP_BUILD, the binaries and PORT_BASE from the environment.
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
command -v openssl >/dev/null || missing+=(openssl)
if ((${#missing[@]})); then
  echo "bench: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
# Debian starts an nginx service on install; ours runs on its own ports and prefix, so it does
# not matter, but a stock server on :80 is not ours to stop.

# Both proxies are built with the profile ssegate ships with (`dist`: fat LTO), or PROFILE. The
# smoke run takes `release`, which CI has built already.
if [[ $mode == smoke ]]; then
  profile=${PROFILE:-release}
else
  profile=${PROFILE:-dist}
fi
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
  # ssegate and the floor together resolve to exactly ssegate's own features, so the floor runs
  # on the very Pingora build ssegate links, and a plain `cargo build --release` rebuilds
  # nothing. The load tool builds apart: its dependencies would change those features (and
  # recompile Pingora) if it joined them.
  cargo build --profile "$profile" --quiet -p ssegate -p ssegate-floor
  cargo build --release --quiet -p ssegate-bench
fi
load="$root/target/release/sse-load"
ssegate="${SSEGATE_BIN:-$root/target/$profile/ssegate}"
floor="${FLOOR_BIN:-$root/target/$profile/pingora-floor}"
base="${SSEGATE_BASE_BIN:-}"

# --- what runs -------------------------------------------------------------------------------
hard=$(ulimit -Hn)
[[ $hard == unlimited ]] && hard=1048576
ulimit -n "$hard"
nofile=$(ulimit -n)

partial=()
if [[ -n "${PATHS:-}" ]]; then
  read -r -a paths <<<"$PATHS"
  partial+=("PATHS=\"$PATHS\"")
else
  paths=(direct nginx floor ssegate)
  [[ -n "$base" ]] && paths+=(base)
fi
for p in "${paths[@]}"; do
  case "$p" in
    direct | nginx | floor | ssegate) ;;
    base) [[ -n "$base" ]] || { echo "bench: path base needs SSEGATE_BASE_BIN" >&2; exit 2; } ;;
    *) echo "bench: unknown path $p (direct nginx floor ssegate base)" >&2; exit 2 ;;
  esac
done
has_path() { [[ " ${paths[*]} " == *" $1 "* ]]; }
proxy_paths=()
for p in "${paths[@]}"; do [[ $p != direct ]] && proxy_paths+=("$p"); done

top_note=""
if [[ $mode == smoke ]]; then
  reps=1
  duration=4
  wrk_secs=2
  scenarios=("200:10")
  memory_scenario="200:10"
  settle=2
  ladder=()
  tls=0
  do_wrk=1
  partial=()
else
  reps=${REPS:-3}
  duration=${DURATION:-20}
  wrk_secs=${WRK_SECS:-10}
  rate=${RATE:-10}
  # A proxy holds two descriptors per stream (client and upstream side) in one process.
  top=${TOP_STREAMS:-10000}
  fd_cap=$(( (nofile - 500) / 2 / 500 * 500 ))
  if ((top > fd_cap)); then
    top_note="top scenario at $fd_cap streams instead of $top: RLIMIT_NOFILE hard limit is $nofile and a proxy needs 2 descriptors per stream"
    top=$fd_cap
  fi
  top_rate=${TOP_RATE:-2}
  if [[ -n "${SCENARIOS:-}" ]]; then
    read -r -a scenarios <<<"$SCENARIOS"
    partial+=("SCENARIOS=\"$SCENARIOS\"")
    top_note=""
  else
    scenarios=("1:$rate" "1000:$rate" "5000:1" "$top:$top_rate")
  fi
  for s in "${scenarios[@]}"; do
    [[ $s =~ ^[1-9][0-9]*:[1-9][0-9]*$ ]] || { echo "bench: scenario $s is not STREAMS:RATE" >&2; exit 2; }
    ((1000 % ${s#*:} == 0)) || { echo "bench: scenario $s: the rate must divide 1000 (events are ms apart)" >&2; exit 2; }
  done
  memory_scenario=${MEMORY_SCENARIO:-5000:1}
  settle=${SETTLE_SECS:-60}
  read -r -a ladder <<<"${LADDER:-2000 5000}"
  if [[ "${SKIP_LADDER:-0}" == 1 ]]; then ladder=(); partial+=(SKIP_LADDER=1); fi
  tls=1
  if [[ "${SKIP_TLS:-0}" == 1 ]]; then tls=0; partial+=(SKIP_TLS=1); fi
  do_wrk=1
  if [[ "${SKIP_WRK:-0}" == 1 ]]; then do_wrk=0; partial+=(SKIP_WRK=1); fi
  tls_streams=${TLS_STREAMS:-1000}
  tls_conns=${TLS_CONNECTIONS:-10}
  tls_rate=${TLS_RATE:-10}
fi
((${#proxy_paths[@]})) || tls=0

# --- ports, pinning, work dir ----------------------------------------------------------------
port_base=${PORT_BASE:-19180}
up_port=$port_base
nginx_port=$((port_base + 1))
ssegate_port=$((port_base + 2))
metrics_port=$((port_base + 3))
floor_port=$((port_base + 4))
nginx_tls_port=$((port_base + 5))
ssegate_tls_port=$((port_base + 6))
floor_tls_port=$((port_base + 7))
for p in $(seq "$port_base" $((port_base + 7))); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    echo "bench: port $p is in use; set PORT_BASE" >&2
    exit 1
  fi
done

proxy_threads=${PROXY_THREADS:-1}
if (($(nproc) >= 2)); then
  load_cpu=(taskset -c 0)
  proxy_cpu=(taskset -c 1)
  pinning="proxy alone on CPU 1 (nginx: $proxy_threads worker(s), Pingora proxies: $proxy_threads thread(s)); upstream, client and wrk on CPU 0"
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
  local pid=$1 state
  kill -"$2" "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do
    state=$(awk '{ sub(/^.*\) /, ""); print $1 }' "/proc/$pid/stat" 2>/dev/null || echo gone)
    [[ $state == gone || $state == Z ]] && break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  # SIGINT is a fast shutdown for every proxy; the upstream (started in the background of a
  # non-interactive shell, which ignores SIGINT there) gets SIGTERM.
  [[ -n "$proxy_pid" ]] && stop "$proxy_pid" INT
  [[ -n "$upstream_pid" ]] && stop "$upstream_pid" TERM
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_port() {
  for _ in $(seq 1 200); do
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
if ((tls)); then
  mkdir -p "$work/tls"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$work/tls/key.pem" -out "$work/tls/cert.pem" 2>/dev/null
fi

mkdir -p "$work/nginx"
user_line=""
[[ $(id -u) == 0 ]] && user_line="user root;"
locations='
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
    }'
tls_server="
  server {
    listen 127.0.0.1:$nginx_tls_port ssl http2 backlog=8192;
    ssl_certificate $work/tls/cert.pem;
    ssl_certificate_key $work/tls/key.pem;
    http2_max_concurrent_streams 1000;
$locations
  }"
# nginx_conf FILE [EXTRA_SERVER]: the plain config, or the plain one plus the TLS server.
nginx_conf() {
  cat > "$1" <<NGINX
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
$locations
  }${2:-}
}
NGINX
}
# ssegate_conf FILE [EXTRA_LISTENER]: `base` runs the same files (one proxy at a time, so the
# ports never clash).
ssegate_conf() {
  cat > "$1" <<YAML
# Generated by bench/run.sh.
pingora:
  threads: $proxy_threads
  pid_file: $work/ssegate.pid
  upgrade_sock: $work/ssegate-upgrade.sock
  grace_period_seconds: 1
  graceful_shutdown_timeout_seconds: 1
listeners:
  - address: 127.0.0.1:$ssegate_port${2:-}
metrics:
  address: 127.0.0.1:$metrics_port
upstreams:
  load:
    peers: [127.0.0.1:$up_port]
routes:
  - { name: sse, match: { path_prefix: /sse }, upstream: load, sse: true }
  - { name: plain, match: { path_prefix: /plain }, upstream: load }
YAML
}
# The TLS listeners are there only in the TLS runs, so that the plain runs are the same with
# SKIP_TLS=1 or without.
nginx_conf "$work/nginx/nginx.conf"
ssegate_conf "$work/ssegate.yaml"
floor_args=(--listen "127.0.0.1:$floor_port" --upstream "127.0.0.1:$up_port"
  --threads "$proxy_threads" --work-dir "$work")
floor_tls_args=("${floor_args[@]}" --tls-listen "127.0.0.1:$floor_tls_port"
  --cert "$work/tls/cert.pem" --key "$work/tls/key.pem")
configs=("")
if ((tls)); then
  nginx_conf "$work/nginx/nginx-tls.conf" "$tls_server"
  ssegate_conf "$work/ssegate-tls.yaml" "
  - address: 127.0.0.1:$ssegate_tls_port
    tls: { cert: $work/tls/cert.pem, key: $work/tls/key.pem }"
  configs+=(-tls)
fi
for c in "${configs[@]}"; do
  has_path nginx && "$nginx_bin" -t -q -p "$work/nginx" -c "$work/nginx/nginx$c.conf" -g 'daemon off;'
  has_path ssegate && "$ssegate" -t -c "$work/ssegate$c.yaml" >/dev/null
  has_path base && "$base" -t -c "$work/ssegate$c.yaml" >/dev/null
done
has_path floor && [[ ! -x "$floor" ]] && { echo "bench: $floor is missing" >&2; exit 1; }

# --- processes -------------------------------------------------------------------------------
"${load_cpu[@]}" "$load" upstream --listen "127.0.0.1:$up_port" 2>"$work/upstream.log" &
upstream_pid=$!
wait_port "$up_port"

proxy_pids=""   # comma-separated, for --watch-pid
port=""         # where the started path listens (plain HTTP)
tls_port=""     # and its TLS listener, if any
# start_proxy PATH [tls]: a fresh proxy; with `tls`, its TLS listener too.
start_proxy() {
  local with_tls=${2:-} suffix=""
  [[ -n $with_tls ]] && suffix=-tls
  tls_port=""
  case "$1" in
    direct)
      proxy_pid=""
      proxy_pids=""
      port=$up_port
      return 0
      ;;
    nginx)
      "${proxy_cpu[@]}" "$nginx_bin" -p "$work/nginx" -c "$work/nginx/nginx$suffix.conf" \
        -g 'daemon off;' 2>>"$work/nginx/stderr.log" &
      proxy_pid=$!
      port=$nginx_port
      tls_port=$nginx_tls_port
      wait_port "$port"
      local workers=""
      for _ in $(seq 1 100); do
        workers=$(children_of "$proxy_pid" | tr '\n' ',')
        [[ $(tr -cd ',' <<<"$workers" | wc -c) -ge "$proxy_threads" ]] && break
        sleep 0.05
      done
      proxy_pids="$proxy_pid,${workers%,}"
      ;;
    ssegate | base)
      local bin=$ssegate
      [[ $1 == base ]] && bin=$base
      RUST_LOG=warn "${proxy_cpu[@]}" "$bin" -c "$work/ssegate$suffix.yaml" 2>>"$work/$1.log" &
      proxy_pid=$!
      port=$ssegate_port
      tls_port=$ssegate_tls_port
      wait_port "$port"
      proxy_pids=$proxy_pid
      ;;
    floor)
      if [[ -n $with_tls ]]; then
        "${proxy_cpu[@]}" "$floor" "${floor_tls_args[@]}" 2>>"$work/floor.log" &
      else
        "${proxy_cpu[@]}" "$floor" "${floor_args[@]}" 2>>"$work/floor.log" &
      fi
      proxy_pid=$!
      port=$floor_port
      tls_port=$floor_tls_port
      wait_port "$port"
      proxy_pids=$proxy_pid
      ;;
  esac
  if [[ -n $with_tls ]]; then wait_port "$tls_port"; fi
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
ms() { awk -v v="$1" 'BEGIN { printf "%.3f", v / 1000 }'; }

# run_sse PATH STREAMS RATE PHASE REP [h2]
run_sse() {
  local path=$1 streams=$2 rate=$3 phase=$4 rep=$5 proto=${6:-h1} line extra=() url note=""
  if [[ $proto == h2 ]]; then start_proxy "$path" tls; else start_proxy "$path"; fi
  [[ -n "$proxy_pids" ]] && extra+=(--watch-pid "$proxy_pids")
  if [[ $proto == h2 ]]; then
    url="https://127.0.0.1:$tls_port/sse?interval_ms=$((1000 / rate))"
    extra+=(--h2 --connections "$tls_conns")
  else
    url="http://127.0.0.1:$port/sse?interval_ms=$((1000 / rate))"
  fi
  if [[ $phase == main && "$streams:$rate" == "$memory_scenario" && -n "$proxy_pids" ]]; then
    extra+=(--settle-secs "$settle")
  fi
  line=$("${load_cpu[@]}" "$load" client --url "$url" \
    --streams "$streams" --duration-secs "$duration" --json "${extra[@]}" \
    --tag "path=$path" --tag "rate=$rate" --tag "phase=$phase" --tag "rep=$rep" \
    2>>"$work/client.log" | tail -1)
  stop_proxy
  echo "$line" >> "$raw"
  local after
  after=$(json_field watched_rss_after_close_kib "$line")
  [[ -n "$after" && $after != null ]] && note="  rss idle/after close $(json_field watched_rss_idle_kib "$line")/$after KiB"
  printf '  %-8s %6s streams × %2s/s %-3s run %s: p50 %7.3f ms  p99 %7.3f ms  head p99 %7.3f ms  %7.0f ev/s  failed %s  missing %s%s\n' \
    "$path" "$streams" "$rate" "${proto/h1/}" "$rep" \
    "$(ms "$(json_field p50_us "$line")")" "$(ms "$(json_field p99_us "$line")")" \
    "$(ms "$(json_field head_p99_us "$line")")" \
    "$(json_field events_per_sec "$line")" "$(json_field streams_failed "$line")" \
    "$(json_field missing "$line")" "$note"
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
  printf '  %-8s wrk -c50                  run %s: %8.0f req/s  p99 %7.3f ms  proxy cpu %s s\n' \
    "$path" "$rep" "$(json_field requests_per_sec "$line")" \
    "$(ms "$(json_field p99_us "$line")")" "$(json_field proxy_cpu_secs "$line")"
}

# --- the runs --------------------------------------------------------------------------------
begin=$(date +%s)
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
run_kind="$mode run"
((${#partial[@]})) && run_kind="partial run (${partial[*]})"
echo "bench: $run_kind, $(nproc) CPUs, paths: ${paths[*]}; pinning: $pinning; work dir $work"
for rep in $(seq 1 "$reps"); do
  for s in "${scenarios[@]}"; do
    for path in "${paths[@]}"; do
      run_sse "$path" "${s%%:*}" "${s#*:}" main "$rep"
    done
  done
  if ((tls)); then
    for path in "${proxy_paths[@]}"; do
      run_sse "$path" "$tls_streams" "$tls_rate" tls "$rep" h2
    done
  fi
done
for streams in "${ladder[@]}"; do
  for path in "${paths[@]}"; do
    run_sse "$path" "$streams" "$top_rate" ladder 1
  done
done
if ((do_wrk)); then
  for rep in $(seq 1 "$reps"); do
    for path in "${paths[@]}"; do
      run_wrk "$path" "$rep"
    done
  done
fi
elapsed=$(($(date +%s) - begin))
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

# --- the table -------------------------------------------------------------------------------
pingora_version=$(awk '/^name = "pingora-core"$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' Cargo.lock)
versions="$("$nginx_bin" -v 2>&1 | sed 's/^nginx version: //')"
has_path ssegate && versions+=", $("$ssegate" --version 2>&1 | head -1)"
versions+=", Pingora $pingora_version, git $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
if [[ -n "$(git status --porcelain -- src Cargo.toml Cargo.lock bench/floor 2>/dev/null)" ]]; then
  versions+=" with uncommitted changes"
fi
path_notes="paths (${paths[*]}): direct = client → upstream; nginx; floor = bare Pingora $pingora_version (\`pingora-floor\`, bench/floor: one ProxyHttp whose upstream_peer returns a fixed HttpPeer, no filters, no logging, Pingora's default settings, built with the same cargo profile as ssegate, \`$profile\`), the engine's own floor; ssegate"
[[ -n "${SSEGATE_BIN:-}" ]] && path_notes+=" (the binary $ssegate)"
has_path base && path_notes+="; base = the ssegate binary $base ($("$base" --version 2>&1 | head -1)), same config as ssegate"
scenario_list=""
for s in "${scenarios[@]}"; do scenario_list+="${scenario_list:+, }${s%%:*} × ${s#*:}/s"; done
notes=(
  "$(date -u '+%Y-%m-%d %H:%M UTC'), $run_kind, $elapsed s"
  "machine: $(nproc) CPUs ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), $(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM, Linux $(uname -r), RLIMIT_NOFILE $nofile"
  "versions: $versions"
  "$path_notes"
  "rounds: $reps; each round runs every scenario on every path in turn (interleaved), and every figure is the median over the rounds"
  "pinning: $pinning"
  "load average before / after: $load_before / $load_after (other work on the machine skews every figure; a proxy that falls behind while its CPU share stays well under 100 % was starved, not saturated)"
  "each SSE run: fresh proxy, streams opened at 2000/s, warm-up = ramp + 2 s, then a ${duration} s measured window; upstream events carry a 0-byte pad; *head* = request sent → response head parsed, per stream"
  "access logs off: nginx \`access_log off\`, ssegate RUST_LOG=warn (its access lines are info-level on stderr); the floor logs nothing"
  "scenarios (HTTP/1.1, a connection per stream): $scenario_list"
)
if [[ " ${scenarios[*]} " == *" $memory_scenario "* ]]; then
  notes+=("memory: in the ${memory_scenario%%:*} × ${memory_scenario#*:}/s scenario the client closes every stream at the window's end, waits $settle s, and reads the proxy's RSS again (nginx: master + workers, summed)")
fi
[[ $mode == full && -n "$top_note" ]] && notes+=("$top_note")
[[ $mode == full ]] && ((${#ladder[@]})) && notes+=("capacity ladder adds ${ladder[*]} streams at $top_rate/s (1 run each)")
if ((tls)); then
  notes+=("TLS + HTTP/2: $tls_streams streams over $tls_conns connections at $tls_rate/s; self-signed P-256 certificate; the client offers only h2 over ALPN, with Chrome's flow-control windows; nginx \`listen ssl http2\` with http2_max_concurrent_streams 1000, ssegate a \`tls:\` listener, the floor TlsSettings::intermediate + h2; Pingora's h2 server allows 100 concurrent streams per connection; no direct path (the upstream speaks plain HTTP/1.1)")
fi
note_args=()
for n in "${notes[@]}"; do note_args+=(--note "$n"); done
check_paths=$(IFS=,; echo "${paths[*]}")

if [[ $mode == smoke ]]; then
  "$load" compare --input "$raw" --title "ssegate vs nginx and bare Pingora: SSE benchmark (smoke)" \
    "${note_args[@]}" --paths "$check_paths" --check
elif ((${#partial[@]})); then
  mkdir -p bench/results
  cp "$raw" bench/results/partial.jsonl
  "$load" compare --input "$raw" "${note_args[@]}" --paths "$check_paths" > bench/results/partial.md
  cat bench/results/partial.md
  echo "bench: wrote bench/results/partial.md and bench/results/partial.jsonl"
else
  mkdir -p bench/results
  stamp=$(date -u +%Y%m%dT%H%M%SZ)
  cp "$raw" "bench/results/raw-$stamp.jsonl"
  "$load" compare --input "$raw" "${note_args[@]}" --paths "$check_paths" > bench/results/latest.md
  cp bench/results/latest.md "bench/results/$stamp.md"
  cat bench/results/latest.md
  echo "bench: wrote bench/results/latest.md, bench/results/$stamp.md and bench/results/raw-$stamp.jsonl"
fi
