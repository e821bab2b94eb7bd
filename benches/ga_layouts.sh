#!/usr/bin/env bash
# The per-#[global_allocator] overhead runs (examples/ga_*) under three code
# layouts: function and loop alignment alone can move a 1-thread ratio by a
# few percent (the baseline's code moves as well as ours), so a claim about
# a few percent should hold in more than one layout.
# Usage: benches/ga_layouts.sh [ROUNDS]   (from the repository root)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-11}
bins="ga_system ga_system_declared ga_allocscope ga_stats_alloc ga_cap ga_call_floor"
for lay in "4 16" "5 32" "6 64"; do
  set -- $lay
  dir=target/layout-f$1-l$2
  echo "== functions aligned to 2^$1 bytes, loops to $2 bytes ($dir)"
  ex=""
  for b in $bins; do ex="$ex --example $b"; done
  # shellcheck disable=SC2086
  CARGO_TARGET_DIR=$dir RUSTFLAGS="-C force-frame-pointers=yes -C llvm-args=-align-all-functions=$1 -C llvm-args=-align-loops=$2" \
    cargo build --release --no-default-features $ex
  E=$dir/release/examples
  python3 ../shared/tools/roundrobin.py -n "$rounds" -- "$E/ga_system" "$E/ga_system_declared" \
    "$E/ga_allocscope" "env BENCH_INTERVAL=0 $E/ga_allocscope" "$E/ga_stats_alloc" "$E/ga_cap" "$E/ga_call_floor"
done
