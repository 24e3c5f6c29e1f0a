#!/usr/bin/env bash
# Graceful upgrade of a daemonized ssegate without systemd: the same steps as
# `systemctl reload ssegate` in conf/ssegate.service.
#
#   scripts/upgrade.sh [CONFIG] [PID_FILE]
#   defaults: /etc/ssegate/ssegate.yaml and /run/ssegate/ssegate.pid; SSEGATE=path/to/ssegate
#
# 1. check the config (a bad one stops here; the running process is untouched);
# 2. SIGQUIT the running process: it offers its listening sockets on pingora.upgrade_sock;
# 3. start the new process with -u -d: it takes the sockets and serves; the old one keeps
#    serving for 5 s, then drains its streams (retry lines) for pingora.grace_period_seconds.
set -euo pipefail
conf=${1:-/etc/ssegate/ssegate.yaml}
pid_file=${2:-/run/ssegate/ssegate.pid}
bin=${SSEGATE:-ssegate}

"$bin" -t -c "$conf"
old=$(cat "$pid_file")
kill -0 "$old"
kill -QUIT "$old"
"$bin" -u -d -c "$conf"
echo "ssegate: upgraded; old process $old drains and exits, new process $(cat "$pid_file")"
