#!/usr/bin/env bash
# Delivery with two shards, end to end, against tests/daemon/rec_sink.py
# (a recording SMTP sink that tracks per-domain concurrency):
#  1. hand-off: messages for 8 domains sit in BOTH shards' spools (a load
#     by owner shard plus a load all into shard 0), [destination]
#     max_connections = 2 and a sink that holds every final reply 40 ms:
#     each message arrives exactly once, the sink never sees more than 2
#     sessions per domain (two shards delivering their own spools would
#     open up to 4), every outcome is journaled on the shard that wrote the
#     message (0 live recipients per shard), a restart delivers nothing;
#  2. delivery-log rotation under delivery_log_max_size = 4k: several files,
#     at most delivery_log_keep + 1, and no line lost across them;
#  3. DSN: a domain whose RCPTs get 550 bounces; one DSN per bounced
#     message (multipart/report, message/delivery-status, the original
#     recipient, Action: failed) reaches the sender's domain from <>; a
#     bounced DSN spawns nothing;
#  4. SIGTERM while the sink stalls every final reply: exit 0 within
#     stop_grace + margin, the aborted recipients deferred, and a restart
#     against a fast sink delivers every message, none twice;
#  5. hold = yes: nothing is delivered, everything stays live.
# Waits are bounded polls (0.1 s steps). Prints TAP.
#
#   test_deliver_shards.sh BUILD_DIR SOURCE_DIR
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
build=$(cd "$1" && pwd)
src=$(cd "$2" && pwd)
ringmail="$build/engine/ringmail"
spool_tool="$build/tools/ringmail-spool"
sink_py="$src/tests/daemon/rec_sink.py"
work="$build/test-scratch-deliver-shards-$$"
rm -rf "$work"
mkdir -p "$work"
SINK_PID=""
DPID=""
cleanup() {
	[ -n "$DPID" ] && kill -KILL "$DPID" 2>/dev/null
	[ -n "$SINK_PID" ] && kill -TERM "$SINK_PID" 2>/dev/null && wait "$SINK_PID" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT
cd "$work"

echo "TAP version 13"

# Start rec_sink.py with "$@"; PORT is the port it bound.
start_rec_sink() {
	rm -f sink.fifo
	mkfifo sink.fifo
	/usr/bin/python3 "$sink_py" --record "$work/received.jsonl" --stats "$work/sink.json" \
		"$@" >sink.fifo 2>sink.err &
	SINK_PID=$!
	local line
	if ! IFS= read -r -t 30 line <sink.fifo; then return 1; fi
	PORT=${line#listening }
	[ -n "$PORT" ]
}

stop_rec_sink() {
	[ -n "$SINK_PID" ] && kill -TERM "$SINK_PID" 2>/dev/null && wait "$SINK_PID" 2>/dev/null
	SINK_PID=""
}

sink_stat() {
	/usr/bin/python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' \
		"$work/sink.json" "$1"
}

received() { [ -f received.jsonl ] && wc -l <received.jsonl || echo 0; }

# Wait (0.1 s steps, $3 s at most, 90 by default) for $1 lines of type $2
# over delivery.log*.
wait_lines() {
	local steps=$(( ${3:-90} * 10 ))
	for _ in $(seq 1 "$steps"); do
		[ "$(all_count "$2")" -ge "$1" ] && return 0
		sleep 0.1
	done
	return 1
}

all_count() {
	cat delivery.log* 2>/dev/null | grep -c "\"type\":\"$1\"" || true
}

live() { # live recipients (pending + deferred) of spool $1, shard $2 or all
	local shard=()
	[ -n "${2:-}" ] && shard=(--shard "$2")
	"$spool_tool" -d "$1" "${shard[@]}" --json stats |
		/usr/bin/python3 -c 'import json,sys; r=json.load(sys.stdin)["recipients"]; print(r["pending"]+r["deferred"])'
}

write_config() { # spool folder, extra [engine] lines, extra sections
	cat >ringmail.conf <<CONF
[engine]
shards = 2
spool_dir = $work/$1
delivery_log = $work/delivery.log
retry_schedule = 1s
retry_jitter = 0
${2:-}

[destination]
max_connections = 2

[route sink]
domains = *
hosts = 127.0.0.1:$PORT
${3:-}
CONF
}

# ---- 1. hand-off, exact counts, limits across shards ----
"$spool_tool" -d "$work/spool" load --shards 2 --count 200 --domains 8 --seed 1 >/dev/null
"$spool_tool" -d "$work/spool" load --shards 1 --count 200 --domains 8 --seed 2 >/dev/null
check "400 messages loaded" "[ \"\$(live \"$work/spool\")\" = 400 ]"
check "shard 1 holds some of them, shard 0 the rest" \
	"[ \"\$(live \"$work/spool\" 1)\" -gt 0 ] && [ \"\$(live \"$work/spool\" 0)\" -gt 200 ]"
check "recording sink listens" "start_rec_sink --dot-delay-ms 40"
write_config spool
check "starts two shards on the loaded spool" "start -c ringmail.conf"
check "recovers 400 recipients" "[[ \"\$started\" == *'400 recipients to deliver'* ]]"
check "400 Delivery lines" "wait_lines 400 Delivery"
# SIGTERM; the totals line comes before "stopped".
stop_with_totals() {
	kill -TERM "$DPID"
	expect "*delivery totals*" || return 1
	totals=$line
	expect "*ringmail: stopped*" || return 1
	wait "$DPID"
	local rc=$?
	DPID=""
	[ $rc -eq 0 ]
}
check "SIGTERM stops it with exit 0" "stop_with_totals"
check "the node prints its totals: delivered 400" \
	"[[ \"\$totals\" == *'delivered 400, bounced 0'* ]]"
stop_rec_sink
check "the sink received 400 messages" "[ \"\$(received)\" = 400 ]"
check "each message exactly once" \
	"[ \"\$(/usr/bin/python3 -c 'import json,sys; print(len({json.loads(l)[\"message_id\"] for l in open(sys.argv[1])}))' received.jsonl)\" = 400 ]"
echo "# sink max sessions per domain: $(sink_stat 'd["max"]')"
check "max_connections = 2 held per domain across both shards" \
	"[ \"\$(sink_stat 'max(d[\"max\"].values())')\" -le 2 ] && [ \"\$(sink_stat 'len(d[\"max\"])')\" = 8 ]"
check "limits were reached (the test can see a breach)" \
	"[ \"\$(sink_stat 'max(d[\"max\"].values())')\" = 2 ]"
check "shard 0 journaled its outcomes: 0 live" "[ \"\$(live \"$work/spool\" 0)\" = 0 ]"
check "shard 1 journaled its outcomes: 0 live" "[ \"\$(live \"$work/spool\" 1)\" = 0 ]"
check "restart recovers 0 recipients" \
	"start_rec_sink && write_config spool && start -c ringmail.conf && [[ \"\$started\" == *' 0 recipients to deliver'* ]]"
check "SIGTERM after the restart exits 0" "stop"
stop_rec_sink
check "nothing re-delivered" "[ \"\$(received)\" = 400 ] && [ \"\$(all_count Delivery)\" = 400 ]"

# ---- 2. log rotation: every line of run 1 (400 Delivery) is in a file ----
rm -f delivery.log* received.jsonl
"$spool_tool" -d "$work/spool2" load --shards 2 --count 150 --domains 4 --seed 3 >/dev/null
"$spool_tool" -d "$work/spool2" load --shards 1 --count 150 --domains 4 --seed 4 >/dev/null
check "sink for the rotation run listens" "start_rec_sink"
write_config spool2 "delivery_log_max_size = 4k
delivery_log_keep = 200"
check "starts with delivery_log_max_size = 4k" "start -c ringmail.conf"
check "300 Delivery lines across the rotated files" "wait_lines 300 Delivery"
check "SIGTERM stops it with exit 0" "stop"
stop_rec_sink
files=$(ls delivery.log* | wc -l)
echo "# $files delivery log files"
check "the log was rotated (several files)" "[ \"$files\" -ge 5 ]"
check "no file grew far past max_size (4k + one turn of lines)" \
	"[ \"\$(for f in delivery.log*; do stat -c %s \"\$f\"; done | sort -n | tail -n 1)\" -lt 300000 ]"
check "exactly 300 Delivery lines, no line lost or torn" \
	"[ \"\$(all_count Delivery)\" = 300 ] && [ \"\$(cat delivery.log* | grep -vc '^{\"type\":\"')\" = 0 ]"
check "the sink got 300 messages" "[ \"\$(received)\" = 300 ]"
# keep = 2: at most log, log.1, log.2 stay.
rm -f delivery.log* received.jsonl
"$spool_tool" -d "$work/spool2b" load --shards 2 --count 100 --domains 4 --seed 5 >/dev/null
check "sink for the keep run listens" "start_rec_sink"
write_config spool2b "delivery_log_max_size = 4k
delivery_log_keep = 2"
check "starts with delivery_log_keep = 2" "start -c ringmail.conf"
check "the sink got 100 messages" \
	"for _ in \$(seq 1 900); do [ \"\$(received)\" -ge 100 ] && break; sleep 0.1; done; [ \"\$(received)\" = 100 ]"
check "SIGTERM stops it with exit 0" "stop"
stop_rec_sink
# (After a rotation the next write creates the log: it may be missing.)
check "delivery_log_keep = 2 keeps log, log.1, log.2 only" \
	"[ \"\$(ls delivery.log* | wc -l)\" -le 3 ] && [ -f delivery.log.2 ] && [ ! -e delivery.log.3 ]"

# ---- 3. DSN for bounced recipients; a bounced DSN spawns nothing ----
rm -f delivery.log* received.jsonl
"$spool_tool" -d "$work/spool3" load --shards 1 --count 40 --domains 4 --seed 6 >/dev/null
check "sink rejecting d1.test listens" "start_rec_sink --reject-domain d1.test"
write_config spool3
check "starts on the DSN spool" "start -c ringmail.conf"
wait_lines 1 Bounce 60
# Every message is final once Delivery + Bounce = 40 (DSNs come on top).
wait_until_final() { # $1: Delivery lines expected besides the bounces
	for _ in $(seq 1 900); do
		local b
		b=$(all_count Bounce)
		[ "$(( $(all_count Delivery) + b ))" -ge "$1" ] && return 0
		sleep 0.1
	done
	return 1
}
bounced=$(cat delivery.log* | grep '"type":"Bounce"' | grep -c '"domain":"d1.test"')
echo "# $bounced recipients of d1.test bounced so far"
check "every message final; DSNs delivered (one per bounce)" \
	"bounced=\$(cat delivery.log* | grep '\"type\":\"Bounce\"' | grep -c '\"domain\":\"d1.test\"'); wait_until_final \$((40 + bounced)) && [ \"\$bounced\" -gt 0 ]"
check "SIGTERM stops it with exit 0" "stop"
stop_rec_sink
bounced=$(cat delivery.log* | grep '"type":"Bounce"' | grep -c '"domain":"d1.test"')
dsn_check='
import json, sys
bounced = int(sys.argv[2])
recs = [json.loads(l) for l in open(sys.argv[1])]
dsns = [r for r in recs if r["from"] == ""]
assert len(dsns) == bounced, (len(dsns), bounced)
for r in dsns:
    assert r["rcpts"] == ["loader@load.test"], r["rcpts"]
    b = r["body"]
    for needle in ("multipart/report", "report-type=delivery-status",
                   "message/delivery-status", "Action: failed", "Status: 5.1.1",
                   "Final-Recipient: rfc822;", "@d1.test", "Auto-Submitted: auto-replied",
                   "text/rfc822-headers", "Subject: load message"):
        assert needle in b, needle
assert sum(1 for r in recs if r["from"] != "") == 40 - bounced
print("ok")'
check "a DSN per bounce reached the sender, multipart/report with the failed recipient" \
	"[ \"\$(/usr/bin/python3 -c \"\$dsn_check\" received.jsonl \"$bounced\")\" = ok ]"
check "one Reception line per DSN, from <>" \
	"[ \"\$(cat delivery.log* | grep '\"type\":\"Reception\"' | grep -c '\"sender\":\"\"')\" = \"$bounced\" ]"
check "the spool is empty afterwards (DSNs included)" "[ \"\$(live \"$work/spool3\")\" = 0 ]"
# The DSNs bounce too: no DSN of a DSN.
rm -f delivery.log* received.jsonl
"$spool_tool" -d "$work/spool3b" load --shards 1 --count 40 --domains 4 --seed 6 >/dev/null
check "sink rejecting d1.test and load.test listens" \
	"start_rec_sink --reject-domain d1.test --reject-domain load.test"
write_config spool3b
check "starts on the second DSN spool" "start -c ringmail.conf"
check "bounces of the messages and of their DSNs logged" \
	"wait_until_final \$((40 + bounced)) && [ \"\$(all_count Bounce)\" = \$((2 * bounced)) ]"
check "SIGTERM stops it with exit 0" "stop"
stop_rec_sink
check "no DSN for a bounced DSN: Reception lines = first bounces only" \
	"[ \"\$(all_count Reception)\" = \"$bounced\" ] && [ \"\$(all_count Bounce)\" = \$((2 * bounced)) ]"
check "the sink received only the accepted originals" "[ \"\$(received)\" = \$((40 - bounced)) ]"

# ---- 4. SIGTERM while every final reply stalls ----
rm -f delivery.log* received.jsonl
"$spool_tool" -d "$work/spool4" load --shards 2 --count 60 --domains 4 --seed 7 >/dev/null
check "stalling sink listens" "start_rec_sink --stall-dot"
write_config spool4 "stop_grace = 1s"
check "starts with stop_grace = 1s" "start -c ringmail.conf"
check "transactions in flight at the sink" \
	"for _ in \$(seq 1 600); do [ \"\$(sink_stat 'd[\"in_data\"]')\" -ge 4 ] && break; sleep 0.1; done; [ \"\$(sink_stat 'd[\"in_data\"]')\" -ge 4 ]"
t0=$(date +%s)
check "SIGTERM exits 0 after the grace period" "stop"
t1=$(date +%s)
echo "# stop took $((t1 - t0)) s (grace 1 s)"
check "stopped within grace + 30 s margin" "[ \$((t1 - t0)) -le 31 ]"
check "aborted recipients logged as deferred" "[ \"\$(all_count TransientFailure)\" -ge 4 ]"
check "nothing delivered, all 60 still live" \
	"[ \"\$(all_count Delivery)\" = 0 ] && [ \"\$(live \"$work/spool4\")\" = 60 ]"
stop_rec_sink
rm -f received.jsonl
check "fast sink listens" "start_rec_sink"
write_config spool4
check "restart recovers the 60 recipients" \
	"start -c ringmail.conf && [[ \"\$started\" == *'60 recipients to deliver'* ]]"
check "60 Delivery lines after the restart (aborted ones due at once)" "wait_lines 60 Delivery 60"
check "SIGTERM stops it with exit 0" "stop"
stop_rec_sink
check "the sink got each of the 60 exactly once" \
	"[ \"\$(received)\" = 60 ] && [ \"\$(/usr/bin/python3 -c 'import json,sys; print(len({json.loads(l)[\"message_id\"] for l in open(sys.argv[1])}))' received.jsonl)\" = 60 ]"
check "nothing live" "[ \"\$(live \"$work/spool4\")\" = 0 ]"

# ---- 5. hold = yes ----
rm -f delivery.log* received.jsonl
"$spool_tool" -d "$work/spool5" load --shards 2 --count 20 --domains 2 --seed 8 >/dev/null
check "sink for hold listens" "start_rec_sink"
write_config spool5 "hold = yes"
check "starts with hold = yes" "start -c ringmail.conf"
# Give a would-be delivery the time to happen: the reload round trip to
# every shard means each ran loop turns with the work queued.
check "SIGHUP round trip (every shard ran its loop)" \
	"kill -HUP \$DPID && expect '*configuration reloaded*'"
check "SIGTERM stops it with exit 0" "stop"
stop_rec_sink
check "nothing delivered on hold, 20 still live" \
	"[ \"\$(received)\" = 0 ] && [ \"\$(all_count Delivery)\" = 0 ] && [ \"\$(live \"$work/spool5\")\" = 20 ]"

# ---- 6. injected messages: Reception, hand-off, delivered from memory ----
rm -f delivery.log* received.jsonl
check "sink for injection listens" "start_rec_sink"
LPORT=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
write_config spool6 "" "[listener in]
address = 127.0.0.1:$LPORT"
check "starts with a listener" "start -c ringmail.conf"
inject='
import smtplib, sys
port = int(sys.argv[1])
for i in range(30):
    s = smtplib.SMTP("127.0.0.1", port, timeout=60)
    body = "From: <inj@src.test>\r\nTo: <r%d@d%d.test>\r\nSubject: inj %d\r\nMessage-ID: <inj%d@src.test>\r\n\r\nhello %d\r\n" % (i, i % 6, i, i, i)
    s.sendmail("inj@src.test", ["r%d@d%d.test" % (i, i % 6)], body)
    s.quit()
print("ok")'
check "30 messages injected over SMTP" "[ \"\$(/usr/bin/python3 -c \"\$inject\" $LPORT)\" = ok ]"
check "30 Reception lines naming the client IP" \
	"wait_lines 30 Reception && [ \"\$(cat delivery.log* | grep '\"type\":\"Reception\"' | grep -c '\"mx_ip\":\"127.0.0.1')\" = 30 ]"
check "30 Delivery lines" "wait_lines 30 Delivery"
check "SIGTERM stops it with exit 0" "stop"
stop_rec_sink
check "the sink got each injected message once" \
	"[ \"\$(received)\" = 30 ] && [ \"\$(/usr/bin/python3 -c 'import json,sys; print(len({json.loads(l)[\"message_id\"] for l in open(sys.argv[1])}))' received.jsonl)\" = 30 ]"
check "nothing live after injection and delivery" "[ \"\$(live \"$work/spool6\")\" = 0 ]"

echo "1..$n"
[ "$failed" -eq 0 ]
