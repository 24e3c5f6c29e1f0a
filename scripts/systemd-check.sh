#!/usr/bin/env bash
# conf/ssegate.service under a real systemd: boots a Debian 12 container (systemd 252) with
# systemd-nspawn, installs ssegate, the unit and the demo upstream, and shows
#   1. systemctl start: active once ssegate said READY=1;
#   2. systemctl reload under SSE load: a new main PID, the unit active throughout, 0 lost events,
#      the new process in the unit's cgroup and kept alive by its own watchdog pings;
#   3. an in-place reload (SIGHUP): RELOADING=1 ... READY=1;
#   4. systemctl stop: STOPPING=1, open streams drained with a retry: line.
# Every command is printed with its output, so the run can be kept as a transcript:
#
#   scripts/systemd-check.sh 2>&1 | tee systemd-transcript.txt
#
# Needs root (systemd-nspawn, debootstrap; installed with apt-get if missing) and Debian's
# mirror. The container's root file system is built once into $SSEGATE_CHECK_ROOT (default
# /var/tmp/ssegate-systemd/rootfs) and reused; binaries and unit are copied in on every run. The
# container has a network namespace of its own: all traffic stays on its 127.0.0.1.
# Not part of CI: it needs privileges and a few minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
root=${SSEGATE_CHECK_ROOT:-/var/tmp/ssegate-systemd/rootfs}
mirror=${SSEGATE_CHECK_MIRROR:-http://deb.debian.org/debian}
machine=ssegate-check
target=${CARGO_TARGET_DIR:-$PWD/target}

say() { printf '\n### %s\n' "$*"; }
# Runs a command inside the container (in its namespaces), echoing it first.
ct() {
  printf '$'
  printf ' %q' "$@"
  printf '\n'
  nsenter -t "$leader" -m -u -i -n -p -C -- "$@"
}
# The same, without echoing (for polls).
ct_quiet() { nsenter -t "$leader" -m -u -i -n -p -C -- "$@"; }
# Waits up to $1 seconds for "$2..." (run in the container) to succeed.
wait_for() {
  local seconds=$1
  shift
  for _ in $(seq $((seconds * 10))); do
    if ct_quiet "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "timed out after ${seconds}s waiting for: $*" >&2
  return 1
}
prop() { ct_quiet systemctl show -P "$1" ssegate; }
# What ssegate logged since the last call, lines matching $1.
unit_log() {
  printf '$ journalctl _SYSTEMD_UNIT=ssegate.service --cursor-file=... -g %q\n' "$1"
  ct_quiet journalctl _SYSTEMD_UNIT=ssegate.service -o short-monotonic --no-pager \
    --cursor-file=/run/check-unit.cursor -g "$1" || true
}
# What systemd itself logged about the unit since the last call (its debug log shows every
# notification it accepted and every state change); the watchdog pings are left out.
manager_log() {
  printf '$ journalctl _PID=1 --cursor-file=... -g "ssegate.service: (Got notification|Changed|...)" | grep -v WATCHDOG=1\n'
  ct_quiet journalctl _PID=1 -o short-monotonic --no-pager --cursor-file=/run/check.cursor \
    -g 'ssegate.service: (Got notification|Changed|New main PID|Main PID|Supervising|Child|Control process|Reloading|Stopping|Killing|Watchdog)' |
    grep -v 'WATCHDOG=1' || true
}

[ "$(id -u)" = 0 ] || { echo "systemd-check: needs root" >&2; exit 1; }
if ! command -v systemd-nspawn >/dev/null || ! command -v debootstrap >/dev/null; then
  apt-get install -y -qq systemd-container debootstrap >/dev/null
fi

if [ ! -x "$root/usr/lib/systemd/systemd" ]; then
  say "building the container's root file system in $root (once)"
  rm -rf "$root.partial"
  mkdir -p "$(dirname "$root")"
  debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,procps,curl,iproute2 \
    bookworm "$root.partial" "$mirror" >/dev/null
  mv "$root.partial" "$root"
fi

say "building ssegate and the demo upstream and load"
cargo build --release --quiet --bin ssegate --example demo_upstream --example upgrade_load

say "installing into the container"
install -m 755 "$target/release/ssegate" "$root/usr/local/bin/ssegate"
install -m 755 "$target/release/examples/demo_upstream" "$root/usr/local/bin/demo_upstream"
install -m 755 "$target/release/examples/upgrade_load" "$root/usr/local/bin/upgrade_load"
install -m 644 conf/ssegate.service "$root/etc/systemd/system/ssegate.service"
# A short watchdog, so that the run shows the new process keeping the unit alive on its own
# pings well after the old one has gone; and a short drain.
mkdir -p "$root/etc/systemd/system/ssegate.service.d"
cat > "$root/etc/systemd/system/ssegate.service.d/check.conf" <<'UNIT'
[Service]
WatchdogSec=4s
Environment=WATCHDOG_USEC=4000000 RUST_LOG=info
UNIT
cat > "$root/etc/systemd/system/demo-upstream.service" <<'UNIT'
[Unit]
Description=SSE demo upstream for ssegate
[Service]
ExecStart=/usr/local/bin/demo_upstream 127.0.0.1:9000
DynamicUser=yes
UNIT
mkdir -p "$root/etc/ssegate"
cat > "$root/etc/ssegate/ssegate.yaml" <<'YAML'
pingora:
  threads: 2
  pid_file: /run/ssegate/ssegate.pid
  upgrade_sock: /run/ssegate/upgrade.sock
  grace_period_seconds: 5
  graceful_shutdown_timeout_seconds: 2
listeners:
  - address: 127.0.0.1:8080
metrics:
  address: 127.0.0.1:9464
upstreams:
  demo:
    peers: [127.0.0.1:9000]
routes:
  - { name: clock, match: { path_prefix: /clock }, upstream: demo, sse: true }
  - { name: web, match: { path_prefix: / }, upstream: demo }
YAML
chroot "$root" sh -c 'id ssegate >/dev/null 2>&1 ||
  useradd --system --no-create-home --shell /usr/sbin/nologin ssegate'
# Clean journal, so that the lines shown are this run's.
rm -rf "$root/var/log/journal"/*

say "booting the container"
log=$(mktemp)
systemd-nspawn -D "$root" -b -M "$machine" --register=no --keep-unit --private-network \
  >"$log" 2>&1 </dev/null &
nspawn=$!
cleanup() {
  if kill -0 "$nspawn" 2>/dev/null; then
    kill -TERM "$nspawn" # the container powers off
    for _ in $(seq 300); do kill -0 "$nspawn" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$nspawn" 2>/dev/null || true
    wait "$nspawn" 2>/dev/null || true
  fi
  rm -f "$log"
}
trap cleanup EXIT
# The container's PID 1 (systemd) is the child of systemd-nspawn that runs systemd.
leader=
for _ in $(seq 100); do
  for pid in $(ps -o pid= --ppid "$nspawn" || true); do
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = systemd ] && leader=$pid
  done
  [ -n "$leader" ] && break
  sleep 0.1
done
[ -n "$leader" ] || { cat "$log"; echo "systemd-check: the container did not start" >&2; exit 1; }
wait_for 60 sh -c 'systemctl is-system-running | grep -qE "running|degraded"' ||
  { cat "$log"; exit 1; }
ct sh -c 'systemctl --version | head -n 1'
# systemd's debug log shows each notification message it accepts and each state change.
ct systemd-analyze log-level debug
ct systemctl daemon-reload
manager_log >/dev/null
unit_log . >/dev/null

say "1. systemctl start"
ct systemctl start demo-upstream
ct systemctl start ssegate
ct systemctl show -p Type -p NotifyAccess -p ActiveState -p SubState -p MainPID -p StatusText ssegate
ct curl -sS -o /dev/null -w 'GET / -> %{http_code}\n' http://127.0.0.1:8080/
unit_log 'told the service manager|watchdog'
manager_log
first=$(prop MainPID)

say "2. systemctl reload under SSE load (20 EventSource-like clients, plain requests)"
load_out=$(mktemp)
printf '$ upgrade_load 127.0.0.1:8080 25 20 &\n'
ct_quiet /usr/local/bin/upgrade_load 127.0.0.1:8080 25 20 >"$load_out" 2>&1 &
load=$!
wait_for 10 sh -c 'curl -s http://127.0.0.1:9464/metrics | grep -q "^ssegate_streams_active{route=\"clock\"} 20"'
ct sh -c 'curl -s http://127.0.0.1:9464/metrics | grep "^ssegate_streams_active"'
ct bash -c 'time systemctl reload ssegate'
second=$(prop MainPID)
ct systemctl show -p ActiveState -p SubState -p MainPID -p StatusText ssegate
echo "MainPID before reload: $first, after: $second"
[ "$second" != "$first" ] && [ "$second" != 0 ] || { echo "systemd-check: MainPID did not change" >&2; exit 1; }
ct cat "/proc/$second/cgroup"
ct systemctl status --no-pager --lines=0 ssegate
echo "waiting for the old process $first to drain and exit"
wait_for 30 sh -c "! kill -0 $first"
ct systemctl show -p ActiveState -p SubState -p MainPID -p NRestarts ssegate
echo "waiting for the load to end"
wait "$load"
cat "$load_out"
grep -q ' 0 lost' "$load_out" || { echo "systemd-check: events were lost" >&2; exit 1; }
echo "the unit after 2 more watchdog periods (WatchdogSec=4s) on the new process's pings:"
sleep 8 # two watchdog periods: what is under test is that nothing happens meanwhile
ct systemctl show -p ActiveState -p SubState -p MainPID -p NRestarts -p WatchdogTimestampMonotonic ssegate
[ "$(prop MainPID)" = "$second" ] && [ "$(prop ActiveState)" = active ] && [ "$(prop NRestarts)" = 0 ] ||
  { echo "systemd-check: the unit did not stay active on the new process" >&2; exit 1; }
unit_log 'SIGQUIT|told the service manager|draining|All runtimes exited|watchdog'
manager_log

say "3. in-place reload (SIGHUP): RELOADING=1 ... READY=1"
ct systemctl kill -s HUP --kill-who=main ssegate
wait_for 10 sh -c "journalctl -u ssegate -o cat | grep -q '^.*reload: /etc/ssegate/ssegate.yaml: ok'"
ct systemctl show -p ActiveState -p SubState -p MainPID -p StatusText ssegate
unit_log 'reload: /etc'
manager_log

say "4. systemctl stop with open streams"
stream_out=$(mktemp)
printf '$ curl -sN http://127.0.0.1:8080/clock &\n'
ct_quiet curl -sN http://127.0.0.1:8080/clock >"$stream_out" 2>&1 &
curl_pid=$!
wait_for 10 sh -c 'curl -s http://127.0.0.1:9464/metrics | grep -q "^ssegate_streams_active{route=\"clock\"} 1"'
ct bash -c 'time systemctl stop ssegate'
wait "$curl_pid" || true
echo "the stream's last lines:"
tail -n 4 "$stream_out"
ct systemctl show -p ActiveState -p SubState -p Result -p MainPID ssegate
unit_log 'SIGTERM|draining|close=drain|All runtimes exited'
manager_log
grep -q '^retry: ' "$stream_out" || { echo "systemd-check: the stream got no retry: line" >&2; exit 1; }

say "5. a broken config: systemctl reload fails at the check, the running process is untouched"
ct systemctl start ssegate
before=$(prop MainPID)
cp "$root/etc/ssegate/ssegate.yaml" "$root/etc/ssegate/ssegate.yaml.good"
echo 'routes: [oops' >> "$root/etc/ssegate/ssegate.yaml"
ct systemctl reload ssegate && { echo "systemd-check: a broken reload succeeded" >&2; exit 1; }
mv "$root/etc/ssegate/ssegate.yaml.good" "$root/etc/ssegate/ssegate.yaml"
ct systemctl show -p ActiveState -p SubState -p MainPID ssegate
[ "$(prop MainPID)" = "$before" ] && [ "$(prop ActiveState)" = active ] ||
  { echo "systemd-check: a failed reload changed the unit" >&2; exit 1; }
manager_log

say "6. why WATCHDOG_USEC is in Environment=: systemd gives it to the ExecStart process only"
echo "Without it (Environment= emptied), the process started by ExecReload has no WATCHDOG_USEC:"
cat > "$root/etc/systemd/system/ssegate.service.d/zz-no-env.conf" <<'UNIT'
[Service]
Environment=
Environment=RUST_LOG=info
UNIT
ct systemctl daemon-reload
ct systemctl restart ssegate
main=$(prop MainPID)
ct sh -c "tr '\\0' '\\n' < /proc/$main/environ | grep ^WATCHDOG"
ct systemctl reload ssegate
new=$(prop MainPID)
ct sh -c "tr '\\0' '\\n' < /proc/$new/environ | grep ^WATCHDOG || echo '(no WATCHDOG_ variables)'"
echo "the old process $main stops pinging at the hand-over and exits; the new one never pings:"
wait_for 30 sh -c "! kill -0 $main"
wait_for 30 sh -c "[ \"\$(systemctl show -P NRestarts ssegate)\" != 0 ]"
ct systemctl show -p ActiveState -p SubState -p MainPID -p NRestarts ssegate
manager_log
rm "$root/etc/systemd/system/ssegate.service.d/zz-no-env.conf"
ct systemctl daemon-reload
ct systemctl stop ssegate

say "7. why the old process of an upgrade sends no STOPPING=1"
echo "Under NotifyAccess=all, STOPPING=1 from any process of the unit (here a shell moved into"
echo "its cgroup) puts the whole unit into stop-sigterm while ssegate still serves:"
ct systemctl start ssegate
# (The unit's cgroup is under /sys/fs/cgroup on a unified host, under its unified/ and systemd/
# subdirectories on a hybrid one.)
ct sh -c 'for d in /sys/fs/cgroup /sys/fs/cgroup/unified /sys/fs/cgroup/systemd; do
    [ -d $d/system.slice/ssegate.service ] && echo $$ > $d/system.slice/ssegate.service/cgroup.procs
  done; NOTIFY_SOCKET=/run/systemd/notify systemd-notify STOPPING=1 && sleep 1'
wait_for 10 sh -c '[ "$(systemctl show -P SubState ssegate)" = stop-sigterm ]'
ct systemctl show -p ActiveState -p SubState -p MainPID ssegate
manager_log
ct systemctl kill -s TERM --kill-who=main ssegate
wait_for 30 sh -c '[ "$(systemctl show -P ActiveState ssegate)" = inactive ]'
ct systemctl show -p ActiveState -p SubState ssegate

rm -f "$load_out" "$stream_out"
say "systemd-check: ok"
