#!/usr/bin/env bash
# POP3 benchmark: our popd against Dovecot's POP3 server (Debian's dovecot-pop3d), both on
# loopback, same users (passwords stored {PLAIN} on both sides so that neither pays for
# password hashing), same corpus delivered to both over LMTP; logins per second and RETR
# megabytes per second with N concurrent sessions, runs interleaved; prints medians and the
# ratio as a Markdown table.
#
#   bench/pop.sh [RUNS] [CONNECTIONS] [SECONDS]     (default 5 runs, 8 connections, 5 s)
#
# Installs dovecot-pop3d and dovecot-lmtpd if missing. Everything lives under
# /var/tmp/pop-bench; Dovecot runs from its own configuration there.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-5}
CONNS=${2:-8}
SECS=${3:-5}
USERS=50
PER_USER=20      # messages per user
SIZE=100000      # bytes per message
B=/var/tmp/pop-bench
OUR_POP=12110; DV_POP=11110; OUR_LMTP=12124; DV_LMTP=11124

for p in dovecot-pop3d dovecot-lmtpd; do
    dpkg-query -W -f='${Status}' $p 2>/dev/null | grep -q "install ok installed" ||
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $p >/dev/null
done
cargo build --release -q -p msg-admin -p lmtpd -p popd -p store-bench

stop_all() {
    for pid in ${LMTPD_PID:-} ${POPD_PID:-}; do kill "$pid" 2>/dev/null || true; done
    [ -f $B/dovecot/run/master.pid ] && kill "$(cat $B/dovecot/run/master.pid)" 2>/dev/null || true
    sleep 0.5
}
trap stop_all EXIT
wait_port() { for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; return 1; }

rm -rf $B
mkdir -p $B/dovecot/{run,state,log,home} $B/msg/config
chmod 755 $B $B/dovecot $B/dovecot/run
chown nobody:nogroup $B/dovecot/home
: > $B/dovecot/users.passwd
for i in $(seq 1 $USERS); do
    echo "user$i:{PLAIN}pass" >> $B/dovecot/users.passwd
    echo "user$i:{PLAIN}pass" >> $B/msg/config/passwd
done
./target/release/start-msg --root $B/msg --prepare-only >/dev/null
./target/release/lmtpd --root $B/msg --listen 127.0.0.1:$OUR_LMTP >/dev/null 2>&1 & LMTPD_PID=$!
./target/release/popd --root $B/msg --listen 127.0.0.1:$OUR_POP >/dev/null 2>&1 & POPD_PID=$!
cat > $B/dovecot/dovecot.conf <<CONF
base_dir = $B/dovecot/run
state_dir = $B/dovecot/state
instance_name = pop-bench
listen = 127.0.0.1
protocols = pop3 lmtp
log_path = $B/dovecot/log/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%n $B/dovecot/users.passwd
}
userdb {
  driver = static
  args = uid=nobody gid=nogroup home=$B/dovecot/home/%n
}
mail_location = maildir:~/Maildir
pop3_uidl_format = %08Xu%08Xv
default_process_limit = 2048
default_client_limit = 8192
service pop3-login {
  inet_listener pop3 {
    address = 127.0.0.1
    port = $DV_POP
  }
  inet_listener pop3s {
    port = 0
  }
  service_count = 0
  process_min_avail = 2
}
service lmtp {
  inet_listener lmtp {
    address = 127.0.0.1
    port = $DV_LMTP
  }
}
CONF
dovecot -c $B/dovecot/dovecot.conf
for p in $OUR_LMTP $OUR_POP $DV_POP $DV_LMTP; do wait_port $p; done

# The same corpus for both: PER_USER messages of SIZE bytes to each user.
for port in $OUR_LMTP $DV_LMTP; do
    ./target/release/lmtp-load --addr 127.0.0.1:$port --connections 4 --messages $((USERS * PER_USER)) --users $USERS --size $SIZE >/dev/null
done

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
declare -A R
for mode in login retr; do
    for run in $(seq 1 "$RUNS"); do
        for who in ours dovecot; do
            port=$OUR_POP; [ $who = dovecot ] && port=$DV_POP
            r=$(./target/release/pop-load --addr 127.0.0.1:$port --mode $mode --connections "$CONNS" --seconds "$SECS" --users $USERS)
            R[$who-$mode]="${R[$who-$mode]:-} $r"
        done
    done
done
echo "| measure ($CONNS sessions) | popd | Dovecot | ratio |"
echo "|---|---|---|---|"
for mode in login retr; do
    o=$(echo ${R[ours-$mode]} | tr ' ' '\n' | median)
    d=$(echo ${R[dovecot-$mode]} | tr ' ' '\n' | median)
    unit="logins/s"; [ $mode = retr ] && unit="RETR MB/s"
    echo "| $unit | $o | $d | $(awk "BEGIN {printf \"%.2f\", $o/$d}") |"
done
echo
echo "runs: $RUNS x ${SECS}s each, interleaved; corpus: $USERS users x $PER_USER messages of $SIZE bytes; raw: ours-login ${R[ours-login]} / dovecot-login ${R[dovecot-login]} / ours-retr ${R[ours-retr]} / dovecot-retr ${R[dovecot-retr]}"
