#!/usr/bin/env bash
# The per-#[global_allocator] overhead runs (the ga_* binaries of
# benches/harness) under three code layouts: function and loop alignment
# alone can move a 1-thread ratio by a few percent (the baseline's code moves
# as well as ours), so a claim about a few percent should hold in more than
# one layout.
# Usage: benches/ga_layouts.sh [ROUNDS]   (from anywhere in the repository)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-11}
bins="ga_system ga_system_declared ga_allocscope ga_stats_alloc ga_cap ga_call_floor"
for lay in "4 16" "5 32" "6 64"; do
  set -- $lay
  dir=target/layout-f$1-l$2
  echo "== functions aligned to 2^$1 bytes, loops to $2 bytes ($dir)"
  bin_args=""
  for b in $bins; do bin_args="$bin_args --bin $b"; done
  # --no-default-features: allocscope as the counting core alone, without
  # the exporter (the harness's only default feature pulls in "profile").
  # shellcheck disable=SC2086
  CARGO_TARGET_DIR=$dir RUSTFLAGS="-C force-frame-pointers=yes -C llvm-args=-align-all-functions=$1 -C llvm-args=-align-loops=$2" \
    cargo build --release -p allocscope-bench --no-default-features $bin_args
  B=$dir/release
  python3 benches/roundrobin.py -n "$rounds" -- "$B/ga_system" "$B/ga_system_declared" \
    "$B/ga_allocscope" "env BENCH_INTERVAL=0 $B/ga_allocscope" "$B/ga_stats_alloc" "$B/ga_cap" "$B/ga_call_floor"
done
