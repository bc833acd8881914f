#!/usr/bin/env bash
# stored's startup analysis and recovery time against the number of folders.
#
#   bench/stored.sh [FOLDERS ...]        (default: 1000 10000 100000; RUNS=5 runs each)
#
# For each size it builds a store (users of 10 folders, one message in each INBOX), then times
# `stored --analyse-only` (the startup analysis and recovery stored does before it signals
# readiness, without the periodic work) in three situations, RUNS times each, and prints the
# medians in milliseconds:
#   clean    - an intact database: log check, quick_check, schema and table reads, agreement
#              with every folder on disk (reconstruct -m -n through its library), or beyond
#              20,000 folders with a sample (the full comparison runs after readiness); also
#              its CPU time (user + system), which a busy machine does not inflate;
#   snapshot - the database truncated to half: set aside, the snapshot restored and verified,
#              then the resync from the folders (1% of the folders were created after the
#              snapshot); shown as restore + resync (stored itself resyncs in the background,
#              after readiness);
#   rebuild  - the database truncated and no snapshot: a new database built from the folders
#              before readiness.
# The page cache is warm (the store was just written or read). Needs a release build; the
# stores go to $WORK (default: a new temporary directory, removed at the end). Needs bc and
# GNU time (Debian packages bc, time).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release -q -p stored --bin stored --example populate
BIN="$CARGO_TARGET_DIR/release"
RUNS="${RUNS:-5}"
WORK="${WORK:-$(mktemp -d)}"
trap 'rm -rf "$WORK"' EXIT
SIZES=("$@")
[ ${#SIZES[@]} -gt 0 ] || SIZES=(1000 10000 100000)

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ms() { sed -n "s/.*$1 \([0-9]*\) ms.*/\1/p"; }
truncate_db() { local f="$1/data/store/mboxlist/mboxlist.db"; truncate -s $(( $(stat -c %s "$f") / 2 )) "$f"; }

echo "| folders | populate s | clean ms | clean CPU s | snapshot restore ms | + resync ms | rebuild ms | db MB |"
echo "|---|---|---|---|---|---|---|---|"
for n in "${SIZES[@]}"; do
  root="$WORK/s$n"
  rm -rf "$root"; mkdir -p "$root/config"
  t0=$(date +%s.%N)
  "$BIN/examples/populate" "$root" "$n"
  pop=$(echo "$(date +%s.%N) - $t0" | bc)

  runs=$(for _ in $(seq "$RUNS"); do /usr/bin/time -f "cpu %U %S" "$BIN/stored" --root "$root" --analyse-only 2>&1; done)
  clean=$(echo "$runs" | ms analysis | median)
  cpu=$(echo "$runs" | awk '/^cpu / {print $2 + $3}' | median)

  # One snapshot, then 1% more folders that only the folders know about.
  "$BIN/stored" --root "$root" --snapshot-interval-secs 86400 & pid=$!
  until grep -q "taken and verified" "$root/data/log/default" 2>/dev/null; do sleep 0.2; done
  kill -TERM "$pid"; wait "$pid"
  "$BIN/examples/populate" "$root" $(( n / 100 > 10 ? n / 100 : 10 )) $(( n / 10 + 1 ))
  restore=(); resync=()
  for _ in $(seq "$RUNS"); do
    truncate_db "$root"
    out=$("$BIN/stored" --root "$root" --analyse-only)
    restore+=("$(echo "$out" | ms analysis)"); resync+=("$(echo "$out" | ms resync)")
  done
  r1=$(printf '%s\n' "${restore[@]}" | median); r2=$(printf '%s\n' "${resync[@]}" | median)

  mv "$root/data/store/dbdata/snapshots" "$root/snapshots.aside"
  rebuild=$(for _ in $(seq "$RUNS"); do truncate_db "$root"; "$BIN/stored" --root "$root" --analyse-only | ms analysis; done | median)
  size=$(echo "scale=1; $(stat -c %s "$root/data/store/mboxlist/mboxlist.db") / 1048576" | bc)
  printf "| %s | %.1f | %s | %s | %s | %s | %s | %.1f |\n" "$n" "$pop" "$clean" "$cpu" "$r1" "$r2" "$rebuild" "$size"
  rm -rf "$root"
done
