#!/usr/bin/env bash
# JMAP benchmark: mshttpd serving Email/query (newest 50 of the INBOX) plus Email/get of
# those 50 (subject, from, receivedAt, keywords, preview, threadId) in one API request, the
# request a webmail page makes to show a folder, with wrk at C connections over loopback;
# requests per second and the latency distribution, without and with Accept-Encoding: gzip
# (local.service.http.gzip.dynamic = 1); medians of RUNS runs as a Markdown table.
#
#   bench/http.sh [RUNS] [CONNECTIONS] [SECONDS] [MESSAGES]   (default 5 runs, 50, 10 s, 2000)
#
# Installs wrk if missing. Everything lives under /var/tmp/http-bench.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-5}
CONNS=${2:-50}
SECS=${3:-10}
MESSAGES=${4:-2000}
B=/var/tmp/http-bench
PORT=12190

command -v wrk >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
cargo build --release -q -p mshttpd
BIN=${CARGO_TARGET_DIR:-target}/release/mshttpd

stop_all() { [ -n "${HTTPD_PID:-}" ] && kill "$HTTPD_PID" 2>/dev/null || true; }
trap stop_all EXIT

rm -rf $B
mkdir -p $B/msg/config
echo "user1:{PLAIN}pass" > $B/msg/config/passwd
printf 'local.service.http.gzip.dynamic = 1\nservice.http.sessionsperprocess = 1000\n' > $B/msg/config/msg.conf
# All connections are one account's: maxConcurrentRequests (8 by default) is raised above them.
$BIN --root $B/msg --listen 127.0.0.1:$PORT --max-concurrent-requests $((CONNS + 8)) > $B/listening 2>$B/stderr & HTTPD_PID=$!
for _ in $(seq 1 100); do grep -q listening $B/listening 2>/dev/null && break; sleep 0.1; done

# Log in once; the session token is the Bearer token for everything after.
TOKEN=$(curl -s -i --data 'username=user1&password=pass' http://127.0.0.1:$PORT/login |
    sed -n 's/^[Ss]et-[Cc]ookie: msg_session=\([^;]*\);.*/\1/p' | tr -d '\r')
[ -n "$TOKEN" ] || { echo "login failed" >&2; exit 1; }
API="http://127.0.0.1:$PORT/jmap/api"
INBOX=$(curl -s -H "Authorization: Bearer $TOKEN" --data-binary \
    '{"using":["urn:ietf:params:jmap:core","urn:ietf:params:jmap:mail"],"methodCalls":[["Mailbox/query",{"accountId":"user1","filter":{"role":"inbox"}},"0"]]}' \
    $API | python3 -c 'import json,sys; print(json.load(sys.stdin)["methodResponses"][0][1]["ids"][0])')

# The corpus: MESSAGES messages created through Email/set, 250 per request.
python3 - "$MESSAGES" "$INBOX" > $B/create.list <<'PY'
import json, sys
n, inbox = int(sys.argv[1]), sys.argv[2]
words = "meeting report lunch invoice travel budget review draft schedule notes".split()
for start in range(0, n, 250):
    create = {}
    for i in range(start, min(n, start + 250)):
        create[f"m{i}"] = {
            "mailboxIds": {inbox: True},
            "keywords": {"$seen": True} if i % 3 else {},
            "from": [{"name": f"Sender {i % 40}", "email": f"sender{i % 40}@example.com"}],
            "to": [{"email": "user1@example.com"}],
            "subject": f"{words[i % 10]} {words[(i // 10) % 10]} #{i}",
            "textBody": [{"partId": "t", "type": "text/plain"}],
            "bodyValues": {"t": {"value": (f"Message {i}. " + " ".join(words) + "\n") * 20}},
        }
    print(json.dumps({"using": ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail"],
                      "methodCalls": [["Email/set", {"accountId": "user1", "create": create}, "0"]]}))
PY
while read -r req; do
    printf '%s' "$req" | curl -s -o /dev/null -w '' -H "Authorization: Bearer $TOKEN" --data-binary @- $API
done < $B/create.list

cat > $B/body.json <<JSON
{"using":["urn:ietf:params:jmap:core","urn:ietf:params:jmap:mail"],"methodCalls":[
 ["Email/query",{"accountId":"user1","filter":{"inMailbox":"$INBOX"},"sort":[{"property":"receivedAt","isAscending":false}],"limit":50},"q"],
 ["Email/get",{"accountId":"user1","#ids":{"resultOf":"q","name":"Email/query","path":"/ids"},"properties":["subject","from","receivedAt","keywords","preview","threadId"]},"g"]]}
JSON
cat > $B/jmap.lua <<LUA
wrk.method = "POST"
wrk.headers["Authorization"] = "Bearer $TOKEN"
wrk.headers["Content-Type"] = "application/json"
local f = io.open("$B/body.json")
wrk.body = f:read("*a")
f:close()
LUA
# Check the request once: 50 emails come back.
got=$(curl -s -H "Authorization: Bearer $TOKEN" --data-binary @$B/body.json $API |
    python3 -c 'import json,sys; print(len(json.load(sys.stdin)["methodResponses"][1][1]["list"]))')
[ "$got" = 50 ] || { echo "the benchmark request returned $got emails, not 50" >&2; exit 1; }

to_ms() { awk '{v=$1; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; printf "%.2f\n", v}'; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

declare -A R
for variant in identity gzip; do
    extra=()
    [ $variant = gzip ] && extra=(-H "Accept-Encoding: gzip")
    for run in $(seq 1 "$RUNS"); do
        out=$(wrk -t2 -c"$CONNS" -d"${SECS}s" --latency -s $B/jmap.lua "${extra[@]}" "$API")
        R[$variant,rps]+="$(echo "$out" | awk '/^Requests\/sec/ {print $2}') "
        for p in 50 75 90 99; do
            R[$variant,p$p]+="$(echo "$out" | awk -v p="$p%" '$1 == p {print $2}' | to_ms) "
        done
        errs=$(echo "$out" | awk '/Non-2xx|Socket errors/ {print}')
        [ -z "$errs" ] || echo "run $run ($variant): $errs" >&2
    done
done

echo
echo "JMAP Email/query (50 newest of $MESSAGES) + Email/get, wrk $CONNS connections, $SECS s x $RUNS runs, medians:"
echo
echo "| Response | Requests/s | p50 ms | p75 ms | p90 ms | p99 ms |"
echo "|---|---:|---:|---:|---:|---:|"
for variant in identity gzip; do
    row="| $variant |"
    for k in rps p50 p75 p90 p99; do
        row+=" $(echo "${R[$variant,$k]}" | tr ' ' '\n' | grep . | median) |"
    done
    echo "$row"
done
