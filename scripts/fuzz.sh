#!/usr/bin/env bash
# Fuzzes the config loader and the SSE event scanner for SECONDS each (default 30); exits non-zero
# on a crash, a failed check or a hang. Inputs that fail are saved under fuzz/artifacts/TARGET/;
# replay one with `cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run TARGET FILE`.
#
# Usage: scripts/fuzz.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${1:-30}

if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install --locked cargo-fuzz
fi
# cargo-fuzz passes rustc nightly-only flags (-Z sanitizer, sancov); RUSTC_BOOTSTRAP lets the
# stable toolchain accept them, so this runs on whichever toolchain is the default.
export RUSTC_BOOTSTRAP=1

for target in config_loader event_scanner; do
  corpus=corpus/$target
  mkdir -p "$corpus"
  seeds=()
  case $target in
    config_loader) seeds=(../conf ../tests/configs/bad) ;;
    event_scanner) seeds=(seeds/event_scanner) ;;
  esac
  dict=()
  [[ -f $target.dict ]] && dict=("-dict=$target.dict")
  echo "fuzz.sh: $target for ${seconds}s"
  # New inputs go to corpus/ (kept between runs, not committed); the seed dirs are only read.
  cargo fuzz run "$target" "$corpus" "${seeds[@]}" -- \
    -max_total_time="$seconds" -timeout=20 -print_final_stats=1 "${dict[@]}"
done
