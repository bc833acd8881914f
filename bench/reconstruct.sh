#!/usr/bin/env bash
# reconstruct benchmark: our reconstruct against Cyrus IMAP's (Debian's cyrus-imapd), on the
# same corpora, runs interleaved; prints medians and ratios (Cyrus time / our time) as
# Markdown tables.
#
#   bench/reconstruct.sh [RUNS] [CORPUS...]     (default 5 runs of both corpora)
#
# Corpora: `big` = one folder of 100,000 messages; `users` = 1,000 users x 5 folders x 20
# messages. Messages are generated (1-16 KB, mean about 4 KB, one in ten multipart with an
# attachment) by `reconstruct/examples/rx-corpus.rs`, which writes identical bytes and
# internal dates into our store (bulk import) and into a Cyrus partition (`N.` files, the
# mailboxes loaded with `ctl_mboxlist -u`, their first index built by Cyrus's reconstruct).
#
# Measures, on a warm page cache:
#   check          ours `reconstruct -n -r`          Cyrus `reconstruct -n`
#   forced rebuild ours `reconstruct -f -r`          Cyrus `reconstruct -G` (re-parses every
#                                                    message of a healthy store)
#   lost index     ours: store.idx and store.cache   Cyrus: cyrus.index and cyrus.cache
#                  removed, `reconstruct -i -f -r`   removed, `reconstruct`
#
# Installs cyrus-imapd if missing. Everything lives under /var/tmp/reconstruct-bench (or
# $RX_BENCH_DIR; RX_REUSE=1 reuses a corpus an earlier run left there). Cyrus runs from its
# own imapd.conf, configdirectory and partition there, never as a service, and never touches
# the system's configuration.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-5}
shift || true
CORPORA=("$@")
[ ${#CORPORA[@]} -eq 0 ] && CORPORA=(big users)
B=${RX_BENCH_DIR:-/var/tmp/reconstruct-bench}
T=${CARGO_TARGET_DIR:-target}
CY=/usr/lib/cyrus/bin

if [ ! -x $CY/reconstruct ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cyrus-imapd >/dev/null
fi
cargo build --release -q -p reconstruct --bin reconstruct --example rx-corpus
RX=$T/release/reconstruct
CORPUS=$T/release/examples/rx-corpus

ms_since() { echo $((($(date +%s%N) - $1) / 1000000)); }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# setup NAME USERS FOLDERS MESSAGES (RX_REUSE=1: keep a corpus left by an earlier run)
setup() {
    local d=$B/$1
    if [ "${RX_REUSE:-0}" = 1 ] && [ -f "$d/ours-first.out" ]; then
        return
    fi
    rm -rf "$d"
    mkdir -p "$d/cyrus/conf" "$d/cyrus/spool"
    cat > "$d/cyrus/imapd.conf" <<CONF
configdirectory: $d/cyrus/conf
partition-default: $d/cyrus/spool
defaultpartition: default
unixhierarchysep: no
altnamespace: no
virtdomains: off
admins: cyrus
syslog_prefix: reconstruct-bench
CONF
    local t0
    t0=$(date +%s%N)
    "$CORPUS" --ours "$d/ours" --cyrus-spool "$d/cyrus/spool" --cyrus-dump "$d/cyrus/mboxlist.json" \
        --users "$2" --folders "$3" --messages "$4"
    chmod 755 "$B" "$d"
    chown -R cyrus:mail "$d/cyrus"
    $CY/ctl_mboxlist -C "$d/cyrus/imapd.conf" -u < "$d/cyrus/mboxlist.json"
    # Cyrus's first index of the files; also checks that the dump and the paths agree.
    $CY/reconstruct -C "$d/cyrus/imapd.conf" > "$d/cyrus/first.out" 2>&1
    local found
    found=$(grep -c "found - adding" "$d/cyrus/first.out" || true)
    if [ "$found" -ne $(($2 * $3 * $4)) ]; then
        echo "Cyrus indexed $found messages, expected $(($2 * $3 * $4)):" >&2
        tail -5 "$d/cyrus/first.out" >&2
        exit 1
    fi
    "$RX" --root "$d/ours" --progress 0 -n -r > "$d/ours-first.out" || {
        echo "our store is not clean after loading:" >&2
        tail -5 "$d/ours-first.out" >&2
        exit 1
    }
    echo "corpus $1: $2 users x $3 folders x $4 messages loaded in $(ms_since "$t0") ms" >&2
}

# run_ours CORPUS KIND: time one run of ours (ms); the exit status must be 0 or 1.
run_ours() {
    local d=$B/$1 t0 rc=0
    case $2 in
    lost) find "$d/ours/data" \( -name store.idx -o -name store.cache \) -delete ;;
    esac
    sync
    t0=$(date +%s%N)
    case $2 in
    check) "$RX" --root "$d/ours" --progress 0 -n -r > "$d/ours.out" || rc=$? ;;
    forced) "$RX" --root "$d/ours" --progress 0 -f -r > "$d/ours.out" || rc=$? ;;
    lost) "$RX" --root "$d/ours" --progress 0 -i -f -r > "$d/ours.out" || rc=$? ;;
    esac
    local t
    t=$(ms_since "$t0")
    if [ $rc -gt 1 ]; then
        echo "ours $2 on $1 failed ($rc):" >&2
        tail -5 "$d/ours.out" >&2
        exit 1
    fi
    echo "$t"
}

run_cyrus() {
    local d=$B/$1 t0
    local conf=$d/cyrus/imapd.conf
    case $2 in
    lost) find "$d/cyrus/spool" \( -name cyrus.index -o -name cyrus.cache \) -delete ;;
    esac
    sync
    t0=$(date +%s%N)
    case $2 in
    check) $CY/reconstruct -C "$conf" -n > "$d/cyrus.out" 2>&1 ;;
    forced) $CY/reconstruct -C "$conf" -G > "$d/cyrus.out" 2>&1 ;;
    lost) $CY/reconstruct -C "$conf" > "$d/cyrus.out" 2>&1 ;;
    esac
    ms_since "$t0"
}

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for c in "${CORPORA[@]}"; do
    case $c in
    big) setup big 1 1 100000 ;;
    users) setup users 1000 5 20 ;;
    small) setup small 10 2 5 ;; # a smoke test of the script itself
    *) echo "unknown corpus $c (big, users, small)" >&2; exit 64 ;;
    esac
    declare -A R=()
    for run in $(seq 1 "$RUNS"); do
        for kind in check forced lost; do
            R[$kind.ours]+="$(run_ours "$c" $kind) "
            R[$kind.cyrus]+="$(run_cyrus "$c" $kind) "
        done
        echo "corpus $c: run $run of $RUNS done" >&2
    done
    echo
    echo "corpus $c ($RUNS runs, median ms)"
    echo
    echo "| measure | ours ms | Cyrus ms | ratio (Cyrus / ours) |"
    echo "|---|---|---|---|"
    for kind in check forced lost; do
        o=$(echo "${R[$kind.ours]}" | tr ' ' '\n' | grep . | median)
        y=$(echo "${R[$kind.cyrus]}" | tr ' ' '\n' | grep . | median)
        echo "| $kind | $o | $y | $(awk -v a="$y" -v b="$o" 'BEGIN {printf "%.2f", a / (b > 0 ? b : 1)}') |"
    done
    echo
    echo "all runs (ms): $(for k in "${!R[@]}"; do printf '%s: %s; ' "$k" "${R[$k]}"; done)"
    unset R
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
