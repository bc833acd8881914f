#!/usr/bin/env bash
# reconstruct benchmark: our reconstruct against Cyrus IMAP's (Debian's cyrus-imapd), on the
# same corpora, runs interleaved; prints medians and ratios (Cyrus time / our time) as
# Markdown tables: elapsed time, and CPU time (user + system, of the process and its
# threads), which a loaded machine disturbs much less.
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
# timed OUT CMD...: run CMD with stdout and stderr to OUT; print "elapsed_ms cpu_ms" and
# return CMD's exit status.
timed() {
    local out=$1 rc=0
    shift
    /usr/bin/time -f "%e %U %S" -o "$out.time" "$@" > "$out" 2>&1 || rc=$?
    # (time(1) puts "Command exited with non-zero status N" first when CMD fails.)
    awk 'NF == 3 && $1 ~ /^[0-9.]+$/ {printf "%d %d\n", $1 * 1000, ($2 + $3) * 1000}' "$out.time"
    return $rc
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# setup NAME USERS FOLDERS MESSAGES (RX_REUSE=1: keep a corpus left by an earlier run)
setup() {
    local d=$B/$1
    if [ "${RX_REUSE:-0}" = 1 ] && [ -f "$d/ours-first.out" ]; then
        # An interrupted earlier run may have left indexes missing: repair both, untimed.
        $CY/reconstruct -C "$d/cyrus/imapd.conf" > /dev/null 2>&1
        "$RX" --root "$d/ours" --progress 0 -r > /dev/null || [ $? = 1 ]
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

# run_ours CORPUS KIND: time one run of ours ("elapsed_ms cpu_ms"); its exit status must be
# 0 or 1.
run_ours() {
    local d=$B/$1 rc=0
    case $2 in
    lost) find "$d/ours/data" \( -name store.idx -o -name store.cache \) -delete ;;
    esac
    sync
    local t
    case $2 in
    check) t=$(timed "$d/ours.out" "$RX" --root "$d/ours" --progress 0 -n -r) || rc=$? ;;
    forced) t=$(timed "$d/ours.out" "$RX" --root "$d/ours" --progress 0 -f -r) || rc=$? ;;
    lost) t=$(timed "$d/ours.out" "$RX" --root "$d/ours" --progress 0 -i -f -r) || rc=$? ;;
    esac
    if [ $rc -gt 1 ]; then
        echo "ours $2 on $1 failed ($rc):" >&2
        tail -5 "$d/ours.out" >&2
        exit 1
    fi
    echo "$t"
}

run_cyrus() {
    local d=$B/$1
    local conf=$d/cyrus/imapd.conf
    case $2 in
    lost) find "$d/cyrus/spool" \( -name cyrus.index -o -name cyrus.cache \) -delete ;;
    esac
    sync
    # Cyrus's reconstruct exits 0 whatever it finds.
    case $2 in
    check) timed "$d/cyrus.out" $CY/reconstruct -C "$conf" -n ;;
    forced) timed "$d/cyrus.out" $CY/reconstruct -C "$conf" -G ;;
    lost) timed "$d/cyrus.out" $CY/reconstruct -C "$conf" ;;
    esac
}

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for c in "${CORPORA[@]}"; do
    case $c in
    big) setup big 1 1 100000 ;;
    users) setup users 1000 5 20 ;;
    small) setup small 10 2 5 ;; # a smoke test of the script itself
    *) echo "unknown corpus $c (big, users, small)" >&2; exit 64 ;;
    esac
    declare -A R=() C=()
    for run in $(seq 1 "$RUNS"); do
        for kind in check forced lost; do
            read -r w u <<< "$(run_ours "$c" $kind)"
            [ -n "$u" ] || exit 1
            R[$kind.ours]+="$w "
            C[$kind.ours]+="$u "
            read -r w u <<< "$(run_cyrus "$c" $kind)"
            [ -n "$u" ] || exit 1
            R[$kind.cyrus]+="$w "
            C[$kind.cyrus]+="$u "
        done
        echo "corpus $c: run $run of $RUNS done" >&2
    done
    echo
    echo "corpus $c ($RUNS runs, median ms)"
    echo
    echo "| measure | ours ms | Cyrus ms | ratio | ours CPU ms | Cyrus CPU ms | CPU ratio |"
    echo "|---|---|---|---|---|---|---|"
    med() { echo "$1" | tr ' ' '\n' | grep . | median; }
    ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / (b > 0 ? b : 1)}'; }
    for kind in check forced lost; do
        o=$(med "${R[$kind.ours]}")
        y=$(med "${R[$kind.cyrus]}")
        oc=$(med "${C[$kind.ours]}")
        yc=$(med "${C[$kind.cyrus]}")
        echo "| $kind | $o | $y | $(ratio "$y" "$o") | $oc | $yc | $(ratio "$yc" "$oc") |"
    done
    echo
    echo "all runs, elapsed ms: $(for k in "${!R[@]}"; do printf '%s: %s; ' "$k" "${R[$k]}"; done)"
    echo "all runs, CPU ms: $(for k in "${!C[@]}"; do printf '%s: %s; ' "$k" "${C[$k]}"; done)"
    unset R C
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
