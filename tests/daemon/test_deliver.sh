#!/usr/bin/env bash
# Delivery end to end (first slice): messages recovered from a spool are
# delivered over a static route to Postfix smtp-sink on loopback, every
# outcome is journaled and logged, and a restart finds nothing left.
# Then a sink that rejects every RCPT with 5xx: every recipient bounces.
# Waits are bounded loops over the delivery log (0.1 s steps, 60 s at
# most). Prints TAP.
#
#   test_deliver.sh BUILD_DIR
set -uo pipefail
# Sourced before any cd: the path may be relative.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
build=$(cd "$1" && pwd)
ringmail="$build/engine/ringmail"
spool_tool="$build/tools/ringmail-spool"
sink_bin=/usr/sbin/smtp-sink
work="$build/test-scratch-deliver-$$"
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
if [ ! -x "$sink_bin" ]; then
	echo "1..0 # SKIP smtp-sink not installed (tools/install-deps installs postfix)"
	exit 0
fi

free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Start smtp-sink on a free port with extra flags "$@"; counters to sink.out.
start_sink() {
	PORT=$(free_port)
	local user=()
	[ "$(id -u)" = 0 ] && user=(-u root)
	"$sink_bin" -c "${user[@]}" "$@" "127.0.0.1:$PORT" 100 >sink.out 2>&1 &
	SINK_PID=$!
	for _ in $(seq 1 100); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then return 0; fi
		sleep 0.1
	done
	return 1
}

# The sink's latest "sess=" counter: SMTP sessions it accepted (plus the
# readiness probe of start_sink).
sink_sessions() {
	tr '\r' '\n' <sink.out | sed -n 's/.*sess=\([0-9]*\).*/\1/p' | tail -n 1
}

# Wait (0.1 s steps, 60 s at most) until the log has $2 lines of type $1.
wait_log() {
	for _ in $(seq 1 600); do
		[ "$(log_count "$1")" -ge "$2" ] && return 0
		sleep 0.1
	done
	return 1
}

live_recipients() {
	"$spool_tool" -d "$1" --json stats |
		python3 -c 'import json,sys; r=json.load(sys.stdin)["recipients"]; print(r["pending"]+r["deferred"])'
}

write_config() {
	cat >ringmail.conf <<CONF
[engine]
shards = 1
spool_dir = $work/$1
delivery_log = $work/delivery.log
retry_schedule = 1s
retry_jitter = 0
# DSNs (on by default) would add messages; test_deliver_shards.sh tests them.
dsn = no
${2:-}

[route sink]
domains = *
hosts = 127.0.0.1:$PORT
CONF
}

# 1. 300 messages over 3 domains, all accepted.
"$spool_tool" -d "$work/spool" load --shards 1 --count 300 --domains 3 >/dev/null
check "300 messages loaded" "[ \"\$(live_recipients \"$work/spool\")\" = 300 ]"
check "smtp-sink listens" "start_sink"
write_config spool
check "starts on the loaded spool" "start -c ringmail.conf"
check "recovers 300 recipients" "[[ \"\$started\" == *'300 recipients to deliver'* ]]"
check "300 Delivery lines in the delivery log" "wait_log Delivery 300"
check "SIGTERM stops it with exit 0" "stop"
stop_sink
check "smtp-sink received 300 messages" "[ \"\$(sink_messages)\" = 300 ]"
# 3 domains x max_connections 20 (default), + 1 probe: connections are
# reused for later jobs, not opened per message.
check "at most 61 SMTP sessions for 300 messages" "[ \"\$(sink_sessions)\" -le 61 ]"
check "no bounce or deferral logged" "[ \"\$(log_count Bounce)\" = 0 ] && [ \"\$(log_count TransientFailure)\" = 0 ]"
check "the spool has 0 live recipients" "[ \"\$(live_recipients \"$work/spool\")\" = 0 ]"
check "a restart recovers 0 recipients" "start -c ringmail.conf && [[ \"\$started\" == *' 0 recipients to deliver'* ]]"
check "SIGTERM after the restart exits 0" "stop"
check "the restart delivered nothing more" "[ \"\$(log_count Delivery)\" = 300 ]"

# 2. Every RCPT rejected with 5xx: 30 messages bounce, nothing is sent.
rm -f delivery.log
"$spool_tool" -d "$work/spool5" load --shards 1 --count 30 --domains 3 >/dev/null
check "smtp-sink rejecting RCPT listens" "start_sink -f RCPT"
write_config spool5
check "starts on the second spool" "start -c ringmail.conf"
check "30 Bounce lines in the delivery log" "wait_log Bounce 30"
check "SIGTERM stops it with exit 0" "stop"
stop_sink
check "bounce lines carry the 5xx code" "[ \"\$(grep -c '\"code\":5' delivery.log)\" = 30 ]"
check "no Delivery line for rejected recipients" "[ \"\$(log_count Delivery)\" = 0 ]"
check "bounced recipients are final in the spool" "[ \"\$(live_recipients \"$work/spool5\")\" = 0 ]"

# 3. Every RCPT answered 4xx: deferred, retried after retry_schedule (1 s)
# in the same run, still live in the spool; a restart against an
# accepting sink delivers them.
rm -f delivery.log
"$spool_tool" -d "$work/spool4" load --shards 1 --count 30 --domains 3 >/dev/null
check "smtp-sink deferring RCPT listens" "start_sink -r RCPT"
write_config spool4
check "starts on the third spool" "start -c ringmail.conf"
check "every recipient deferred twice (a retry ran)" "wait_log TransientFailure 60"
check "second attempts are logged as attempt 2" "grep -q '\"attempt\":2' delivery.log"
check "SIGTERM stops it with exit 0" "stop"
stop_sink
# The retry (1 s later, within idle_timeout 5 s) went over the idle
# connections of the first attempt: no new sessions for it.
check "the retry reused idle connections (<= 61 sessions)" "[ \"\$(sink_sessions)\" -le 61 ]"
check "no Expiration within the default 5d lifetime" "[ \"\$(log_count Expiration)\" = 0 ]"
check "no Bounce or Delivery for deferred recipients" \
	"[ \"\$(log_count Bounce)\" = 0 ] && [ \"\$(log_count Delivery)\" = 0 ]"
check "deferred recipients stay live in the spool" "[ \"\$(live_recipients \"$work/spool4\")\" = 30 ]"
check "accepting smtp-sink listens" "start_sink"
write_config spool4
check "restart recovers the 30 deferred recipients" \
	"start -c ringmail.conf && [[ \"\$started\" == *' 30 recipients to deliver'* ]]"
check "30 Delivery lines after the restart" "wait_log Delivery 30"
check "SIGTERM stops it with exit 0" "stop"
stop_sink
check "smtp-sink received 30 messages" "[ \"\$(sink_messages)\" = 30 ]"
check "nothing live left" "[ \"\$(live_recipients \"$work/spool4\")\" = 0 ]"

# 4. As 3, but max_queue_lifetime = 3s: deferred recipients older than
# that are not retried but expire (final, 4.4.7, message-expired).
rm -f delivery.log
"$spool_tool" -d "$work/spool4x" load --shards 1 --count 30 --domains 3 >/dev/null
check "smtp-sink deferring RCPT listens (expiry)" "start_sink -r RCPT"
write_config spool4x "max_queue_lifetime = 3s"
check "starts on the fourth spool" "start -c ringmail.conf"
check "30 Expiration lines in the delivery log" "wait_log Expiration 30"
sleep 2.5
check "no recipient is retried after it expired" "[ \"\$(log_count Expiration)\" = 30 ]"
check "SIGTERM stops it with exit 0" "stop"
stop_sink
check "Expiration lines carry 4.4.7 and message-expired" \
	"[ \"\$(grep '\"type\":\"Expiration\"' delivery.log | grep '\"enhanced\":\"4.4.7\"' | grep -c '\"category\":\"message-expired\"')\" = 30 ]"
check "no Bounce or Delivery for expired recipients" \
	"[ \"\$(log_count Bounce)\" = 0 ] && [ \"\$(log_count Delivery)\" = 0 ]"
check "expired recipients are final in the spool" "[ \"\$(live_recipients \"$work/spool4x\")\" = 0 ]"
check "a restart recovers 0 recipients" "start -c ringmail.conf && [[ \"\$started\" == *' 0 recipients to deliver'* ]]"
check "SIGTERM after the restart exits 0" "stop"

# 5. max_messages_per_connection stays exact with each message pipelined
# behind the previous one's dot: 40 messages, one connection at a time, 7
# per connection: exactly ceil(40/7) = 6 SMTP sessions (+ the probe); a
# connection that carried an 8th would leave 5.
rm -f delivery.log
"$spool_tool" -d "$work/spoolm" load --shards 1 --count 40 --domains 1 >/dev/null
check "smtp-sink listens (messages per connection)" "start_sink"
write_config spoolm $'[destination]\nmax_connections = 1\nmax_messages_per_connection = 7'
check "starts on the fifth spool" "start -c ringmail.conf"
check "40 Delivery lines in the delivery log" "wait_log Delivery 40"
check "SIGTERM stops it with exit 0" "stop"
stop_sink
check "smtp-sink received 40 messages" "[ \"\$(sink_messages)\" = 40 ]"
check "7 messages per connection: 6 SMTP sessions (+ probe)" "[ \"\$(sink_sessions)\" = 7 ]"

echo "1..$n"
[ $failed -eq 0 ]
