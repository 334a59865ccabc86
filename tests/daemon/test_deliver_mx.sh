#!/usr/bin/env bash
# MX delivery end to end: no static route, [engine] dns_servers points at a
# dnsmasq on loopback, smtp_port at a high port. d0.test and d1.test have
# MX 10 -> sinka.test (127.0.0.2, nothing listening: refused) and MX 20 ->
# sinkb.test (127.0.0.3, smtp-sink): every message must fall over to the
# second MX. d2.test does not exist (NXDOMAIN: bounced 5.1.2, bad-domain)
# and d3.test has a null MX (RFC 7505: bounced 5.1.10). Waits are bounded
# loops over the delivery log (0.1 s steps, 60 s at most). Prints TAP
# (a missing dnsmasq or smtp-sink is a TAP skip: meson reads exit 77 of a
# TAP test as an error).
#
#   test_deliver_mx.sh BUILD_DIR
set -uo pipefail
# Sourced before any cd: the path may be relative.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
build=$(cd "$1" && pwd)
ringmail="$build/engine/ringmail"
spool_tool="$build/tools/ringmail-spool"
sink_bin=/usr/sbin/smtp-sink
work="$build/test-scratch-deliver-mx-$$"
SINK_PID=""
DNS_PID=""
DPID=""
cleanup() {
	[ -n "$DPID" ] && kill -KILL "$DPID" 2>/dev/null
	[ -n "$SINK_PID" ] && kill -TERM "$SINK_PID" 2>/dev/null && wait "$SINK_PID" 2>/dev/null
	[ -n "$DNS_PID" ] && kill -TERM "$DNS_PID" 2>/dev/null && wait "$DNS_PID" 2>/dev/null
	rm -rf "$work"
}


echo "TAP version 13"
dnsmasq_bin=""
for candidate in "${RINGMAIL_DNSMASQ:-}" /usr/sbin/dnsmasq /usr/bin/dnsmasq /sbin/dnsmasq; do
	if [ -n "$candidate" ] && [ -x "$candidate" ]; then dnsmasq_bin=$candidate; break; fi
done
if [ ! -x "$sink_bin" ] || [ -z "$dnsmasq_bin" ]; then
	echo "1..0 # SKIP smtp-sink or dnsmasq not installed (tools/install-deps)"
	exit 0
fi
rm -rf "$work"
mkdir -p "$work"
trap cleanup EXIT
cd "$work"

free_port() {
	python3 -c 'import socket,sys; s=socket.socket(socket.AF_INET, getattr(socket, sys.argv[1])); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' "$1"
}

# dnsmasq on a free UDP port of 127.0.0.1; ready when it answers.
start_dns() {
	for _ in 1 2 3 4 5; do
		DNS_PORT=$(free_port SOCK_DGRAM)
		"$dnsmasq_bin" --no-daemon --port="$DNS_PORT" --listen-address=127.0.0.1 \
			--bind-interfaces --no-resolv --no-hosts --conf-file=/dev/null --pid-file \
			--log-facility=/dev/null --local=/test/ --local-ttl=60 \
			--mx-host=d0.test,sinka.test,10 --mx-host=d0.test,sinkb.test,20 \
			--mx-host=d1.test,sinka.test,10 --mx-host=d1.test,sinkb.test,20 \
			--mx-host=d3.test,.,0 \
			--host-record=sinka.test,127.0.0.2 --host-record=sinkb.test,127.0.0.3 \
			>/dev/null 2>&1 &
		DNS_PID=$!
		for _ in $(seq 1 50); do
			if ! kill -0 "$DNS_PID" 2>/dev/null; then break; fi
			if dns_answers; then return 0; fi
			sleep 0.1
		done
		kill -TERM "$DNS_PID" 2>/dev/null
		wait "$DNS_PID" 2>/dev/null
		DNS_PID=""
	done
	return 1
}

# One A query for sinkb.test over UDP; true when 127.0.0.3 comes back.
dns_answers() {
	python3 - "$DNS_PORT" <<'PY'
import socket, struct, sys
q = struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
for label in b"sinkb.test".split(b"."):
    q += bytes([len(label)]) + label
q += b"\0" + struct.pack(">HH", 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.2)
try:
    s.sendto(q, ("127.0.0.1", int(sys.argv[1])))
    data = s.recv(512)
except OSError:
    sys.exit(1)
sys.exit(0 if data.endswith(bytes([127, 0, 0, 3])) else 1)
PY
}

# smtp-sink on 127.0.0.3 only, on a port that is free on 127.0.0.2 too.
start_sink() {
	PORT=$(free_port SOCK_STREAM)
	local user=()
	[ "$(id -u)" = 0 ] && user=(-u root)
	"$sink_bin" -c "${user[@]}" "127.0.0.3:$PORT" 100 >sink.out 2>&1 &
	SINK_PID=$!
	for _ in $(seq 1 100); do
		if (exec 3<>"/dev/tcp/127.0.0.3/$PORT") 2>/dev/null; then return 0; fi
		sleep 0.1
	done
	return 1
}

# Lines of the delivery log of type $1 that also contain $2.
log_count_with() {
	local count
	count=$(grep "\"type\":\"$1\"" delivery.log 2>/dev/null | grep -c -- "$2")
	echo "${count:-0}"
}

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

# Loaded messages per domain (the loader spreads them over d0..d3.test).
rcpt_count() {
	"$spool_tool" -d "$work/spool" ls | grep -c "@$1"
}

# 200 messages over d0..d3.test; no route: everything goes through MX.
"$spool_tool" -d "$work/spool" load --shards 1 --count 200 --domains 4 >/dev/null
check "200 messages loaded" "[ \"\$(live_recipients \"$work/spool\")\" = 200 ]"
good=$(( $(rcpt_count d0.test) + $(rcpt_count d1.test) ))
nx=$(rcpt_count d2.test)
nullmx=$(rcpt_count d3.test)
echo "# d0+d1: $good, d2 (NXDOMAIN): $nx, d3 (null MX): $nullmx"
check "every domain got messages" "[ $good -gt 0 ] && [ $nx -gt 0 ] && [ $nullmx -gt 0 ]"
check "dnsmasq answers" "start_dns"
check "smtp-sink listens on 127.0.0.3 only" "start_sink"
cat >ringmail.conf <<CONF
[engine]
shards = 1
spool_dir = $work/spool
delivery_log = $work/delivery.log
retry_schedule = 1s
retry_jitter = 0
# DSNs (on by default) would add messages; test_deliver_shards.sh tests them.
dsn = no
dns_servers = 127.0.0.1:$DNS_PORT
smtp_port = $PORT
CONF
check "starts with dns_servers and no route" "start -c ringmail.conf"
check "recovers 200 recipients" "[[ \"\$started\" == *'200 recipients to deliver'* ]]"
check "$good Delivery lines (MX fall-over to sinkb.test)" "wait_log Delivery $good"
check "$((nx + nullmx)) Bounce lines" "wait_log Bounce $((nx + nullmx))"
check "SIGTERM stops it with exit 0" "stop"
stop_sink
check "smtp-sink on 127.0.0.3 received $good messages" "[ \"\$(sink_messages)\" = $good ]"
check "deliveries name sinkb.test and 127.0.0.3" \
	"[ \"\$(log_count_with Delivery '\"mx_host\":\"sinkb.test\"')\" = $good ] && [ \"\$(log_count_with Delivery '127.0.0.3')\" = $good ]"
check "NXDOMAIN recipients bounced 5.1.2, bad-domain" \
	"[ \"\$(grep '\"type\":\"Bounce\"' delivery.log | grep '@d2.test' | grep '5.1.2' | grep -c 'bad-domain')\" = $nx ]"
check "null MX recipients bounced 5.1.10" \
	"[ \"\$(grep '\"type\":\"Bounce\"' delivery.log | grep '@d3.test' | grep -c '5.1.10')\" = $nullmx ]"
check "no bounce for MX'd domains" \
	"[ \"\$(grep '\"type\":\"Bounce\"' delivery.log | grep -c -e '@d0.test' -e '@d1.test')\" = 0 ]"
check "nothing live left in the spool" "[ \"\$(live_recipients \"$work/spool\")\" = 0 ]"

echo "1..$n"
[ $failed -eq 0 ]
