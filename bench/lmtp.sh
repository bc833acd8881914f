#!/usr/bin/env bash
# LMTP delivery benchmark: our lmtpd against Dovecot's LMTP server (Debian's dovecot-lmtpd),
# both on loopback, same users, same generated 4 KB messages, 1 and 16 connections, runs
# interleaved; prints medians and the ratio as a Markdown table.
#
#   bench/lmtp.sh [RUNS] [MESSAGES]        (default 5 runs of 2000 deliveries)
#
# Installs dovecot-lmtpd if missing. Everything lives under /var/tmp/lmtp-bench; Dovecot
# runs from its own configuration there and never touches the system's.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-5}
MESSAGES=${2:-2000}
USERS=50
B=/var/tmp/lmtp-bench
OUR_PORT=12024
DV_PORT=11024

if ! command -v dovecot >/dev/null 2>&1 || [ ! -x /usr/lib/dovecot/lmtp ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dovecot-lmtpd >/dev/null
fi
cargo build --release -q -p msg-admin -p lmtpd -p store-bench

stop_all() {
    [ -n "${LMTPD_PID:-}" ] && kill "$LMTPD_PID" 2>/dev/null || true
    [ -f $B/dovecot/run/master.pid ] && kill "$(cat $B/dovecot/run/master.pid)" 2>/dev/null || true
    sleep 0.5
}
trap stop_all EXIT

setup() {
    stop_all
    rm -rf $B
    mkdir -p $B/dovecot/{run,state,log,home}
    chmod 755 $B $B/dovecot $B/dovecot/run
    chown nobody:nogroup $B/dovecot/home
    # Ours.
    ./target/release/start-msg --root $B/msg --prepare-only >/dev/null
    for i in $(seq 1 $USERS); do echo pass | ./target/release/msuser --root $B/msg add user$i >/dev/null; done
    ./target/release/lmtpd --root $B/msg --listen 127.0.0.1:$OUR_PORT >$B/lmtpd.out 2>$B/lmtpd.err &
    LMTPD_PID=$!
    # Dovecot: passwd-file users, Maildir, the default fsync behaviour (mail_fsync = optimized).
    : > $B/dovecot/users.passwd
    for i in $(seq 1 $USERS); do echo "user$i:{PLAIN}pass" >> $B/dovecot/users.passwd; done
    cat > $B/dovecot/dovecot.conf <<CONF
base_dir = $B/dovecot/run
state_dir = $B/dovecot/state
instance_name = lmtp-bench
listen = 127.0.0.1
protocols = lmtp
log_path = $B/dovecot/log/dovecot.log
ssl = no
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%n $B/dovecot/users.passwd
}
userdb {
  driver = static
  args = uid=nobody gid=nogroup home=$B/dovecot/home/%n
}
mail_location = maildir:~/Maildir
lmtp_rcpt_check_quota = no
service lmtp {
  inet_listener lmtp {
    address = 127.0.0.1
    port = $DV_PORT
  }
  process_limit = 64
}
CONF
    dovecot -c $B/dovecot/dovecot.conf
    for port in $OUR_PORT $DV_PORT; do
        for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
    done
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

setup
declare -A R
for conns in 1 16; do
    for run in $(seq 1 "$RUNS"); do
        for who in ours dovecot; do
            port=$OUR_PORT; [ $who = dovecot ] && port=$DV_PORT
            r=$(./target/release/lmtp-load --addr 127.0.0.1:$port --connections $conns --messages "$MESSAGES" --users $USERS)
            R[$who-$conns]="${R[$who-$conns]:-} $r"
        done
    done
done
echo "| connections | lmtpd deliveries/s | Dovecot deliveries/s | ratio |"
echo "|---|---|---|---|"
for conns in 1 16; do
    o=$(echo ${R[ours-$conns]} | tr ' ' '\n' | median)
    d=$(echo ${R[dovecot-$conns]} | tr ' ' '\n' | median)
    echo "| $conns | $o | $d | $(awk "BEGIN {printf \"%.2f\", $o/$d}") |"
done
echo
echo "runs: $RUNS x $MESSAGES deliveries of 4 KB to $USERS users, interleaved; raw: ${R[*]}"
