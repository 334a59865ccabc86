#!/usr/bin/env bash
# bench-targets: engine/ringmail tools/ringmail-spool bench/ringmail-sink
# ./bench/run tls [--quick] - delivery over STARTTLS against plaintext (issue 7).
#
# The delivery benchmark's W1 workload (bench_deliver.sh): a spool
# pre-loaded with COUNT messages of 5 KB for one domain (ringmail-spool
# load), delivered by the daemon over 20 connections to ringmail-sink on
# 127.0.0.1, in phases of one run:
#   A. plaintext: the sink offers no STARTTLS;
#   B. TLS: the sink offers STARTTLS (--tls-cert/--tls-key, certificates
#      from tests/lib/tls_certs.sh), the destination says tls = required,
#      connections are reused (max_messages_per_connection 1000000);
#   C0. plaintext, max_messages_per_connection = 1, COUNT/10 messages
#      (what a connection costs without TLS, for C);
#   C. handshakes: as B with max_messages_per_connection = 1 and the sink
#      refusing resumption (--tls-no-resume): one full handshake per
#      message, COUNT/10 messages.
# A and B alternate ROUNDS times (3; the machine may be shared: the best
# rate of each is compared, and every round's own ratio is printed).
# Rates are for the delivery phase (first to last Delivery line); the
# daemon's CPU is its user + system time, the sink's its own (one thread,
# on the same machine). handshakes_per_s_per_core is C's handshakes
# (counted by the sink) per daemon CPU second.
#
# Last stdout line: {"tls_msgs_per_s":..,"plain_msgs_per_s":..,
# "ratio_vs_plain":..,"handshakes_per_s_per_core":..,...} (ratio: B / A).
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

count=200000
size=5120
rounds=3
for arg in "$@"; do
	case "$arg" in
	--quick) count=20000 ;;
	-h | --help)
		sed -n '3,26p' "$0" | sed 's/^# \{0,1\}//' >&2
		exit 0
		;;
	*) bench_die "tls: unknown argument '$arg'" ;;
	esac
done
handshake_count=$((count / 10))
ringmail="$BUILD_DIR/engine/ringmail"
spool_tool="$BUILD_DIR/tools/ringmail-spool"
sink_exe="$BUILD_DIR/bench/ringmail-sink"
[ -x "$ringmail" ] && [ -x "$spool_tool" ] && [ -x "$sink_exe" ] ||
	bench_die "build first (ninja -C $BUILD_DIR)"
command -v openssl >/dev/null || bench_die "openssl missing (tools/install-deps installs it)"
shards=$(nproc)
[ "$shards" -gt 4 ] && shards=4

trap bench_cleanup EXIT
bench_enter_work
sh "$bench_root/tests/lib/tls_certs.sh" "$BENCH_WORK/certs" || bench_die "tls_certs.sh failed"

# delivered LOG: Delivery lines so far.
delivered() { grep -c '"type":"Delivery"' "$1" 2>/dev/null || true; }

# write_config PORT PER_CONNECTION [TLS]: the daemon's configuration.
write_config() {
	cat <<EOF
[engine]
shards = $shards
spool_dir = $BENCH_WORK/spool
delivery_log = $BENCH_WORK/delivery.log
max_connections = 1000
free_space_reserve = 64M
tls_ca_file = $BENCH_WORK/certs/ca.pem

[destination]
max_connections = 20
max_messages_per_connection = $2
idle_timeout = 30s
EOF
	[ -n "${3:-}" ] && printf 'tls = %s\n' "$3"
	printf '\n[route sink]\nhosts = 127.0.0.1:%u\ndomains = d0.test\n' "$1"
}

# run_phase NAME MESSAGES PER_CONNECTION TLS TEXT [SINK ARGS...]: load the
# spool, start the sink and the daemon, wait for every Delivery line.
# Sets P_RATE, P_CPU_S, P_OK, P_TLS_USED and the sink's P_FULL, P_RESUMED,
# P_ERRORS, P_SINK_MESSAGES.
run_phase() {
	local name="$1" messages="$2" per_conn="$3" tls="$4" text="$5" port t1 dpid first=0 spid
	shift 5
	port=$(bench_free_port)
	rm -rf spool delivery.log "sink-$name.json"
	"$spool_tool" -d spool load --shards "$shards" --count "$messages" --size "$size" \
		--domains 1 >/dev/null || bench_die "ringmail-spool load failed"
	write_config "$port" "$per_conn" "$tls" >"$name.conf"
	"$sink_exe" -l "127.0.0.1:$port" --json "sink-$name.json" --quiet "$@" 2>"sink-$name.err" &
	spid=$!
	bench_track "$spid"
	bench_wait_port 127.0.0.1 "$port" || bench_die "ringmail-sink did not start: $(cat "sink-$name.err")"
	sync
	"$ringmail" -c "$name.conf" 2>"daemon-$name.err" &
	dpid=$!
	bench_follow_start delivery.log "$messages" "$dpid"
	P_OK=0
	if bench_follow_wait first "$dpid" 300; then
		first=$(now_ns)
		bench_follow_wait done "$dpid" 300 && P_OK=1
	fi
	t1=$(now_ns)
	P_CPU_S=$(bench_cpu_s "$dpid")
	kill -TERM "$dpid" 2>/dev/null
	wait "$dpid" 2>/dev/null
	bench_stop_tracked
	bench_follow_stop
	[ "$first" = 0 ] && first=$t1
	P_RATE=$(bench_ratio "$messages" "$(bench_seconds "$first" "$t1")")
	P_TLS_USED=$(grep -c '"used":true' delivery.log 2>/dev/null || true)
	P_TLS_USED=${P_TLS_USED:-0}
	P_FULL=$(bench_json_num "sink-$name.json" tls_handshakes_full)
	P_RESUMED=$(bench_json_num "sink-$name.json" tls_handshakes_resumed)
	P_ERRORS=$(bench_json_num "sink-$name.json" tls_handshake_errors)
	P_SINK_MESSAGES=$(bench_json_num "sink-$name.json" messages)
	P_SINK_CPU=$(bench_json_num "sink-$name.json" cpu_s)
	if [ "$P_OK" != 1 ]; then
		bench_log "$name: delivered $(delivered delivery.log) of $messages; daemon: $(tail -2 "daemon-$name.err")"
	fi
	printf '%-2s %-40s %9s msgs/s  cpu %7ss sink %7ss  tls %6s/%-6s  handshakes full %s resumed %s errors %s  %s\n' \
		"$name" "$text" "$P_RATE" "$P_CPU_S" "$P_SINK_CPU" "$P_TLS_USED" "$messages" "$P_FULL" "$P_RESUMED" \
		"$P_ERRORS" "$([ "$P_OK" = 1 ] && echo complete || echo INCOMPLETE)"
}

cert=(--tls-cert "$BENCH_WORK/certs/server.pem" --tls-key "$BENCH_WORK/certs/server.key")
echo "tls: $count messages of $size bytes ($handshake_count for C), $shards shards, $(nproc) CPUs"
# best OLD NEW: the larger rate.
best() { awk -v a="$1" -v b="$2" 'BEGIN { print (b + 0 > a + 0) ? b : a }'; }
a_rate=0 b_rate=0 a_ok=1 b_ok=1 b_used=$count round_ratios=""
a_cpu=0 a_sink_cpu=0 b_cpu=0 b_sink_cpu=0 b_full=0 b_resumed=0
for round in $(seq 1 "$rounds"); do
	run_phase A "$count" 1000000 "" "plaintext sink, connections reused"
	[ "$P_OK" = 1 ] || a_ok=0
	round_a=$P_RATE
	if [ "$(best "$a_rate" "$P_RATE")" != "$a_rate" ]; then
		a_rate=$P_RATE a_cpu=$P_CPU_S a_sink_cpu=$P_SINK_CPU
	fi
	run_phase B "$count" 1000000 required "STARTTLS sink, connections reused" "${cert[@]}"
	[ "$P_OK" = 1 ] || b_ok=0
	[ "$P_TLS_USED" -lt "$b_used" ] && b_used=$P_TLS_USED
	if [ "$(best "$b_rate" "$P_RATE")" != "$b_rate" ]; then
		b_rate=$P_RATE b_cpu=$P_CPU_S b_sink_cpu=$P_SINK_CPU b_full=$P_FULL b_resumed=$P_RESUMED
	fi
	round_ratios="$round_ratios${round_ratios:+,}$(bench_ratio "$P_RATE" "$round_a")"
	echo "round $round: ratio $(bench_ratio "$P_RATE" "$round_a")"
done
run_phase C0 "$handshake_count" 1 "" "plaintext sink, 1 msg/conn"
c0_rate=$P_RATE c0_ok=$P_OK c0_cpu=$P_CPU_S
run_phase C "$handshake_count" 1 required "STARTTLS sink, 1 msg/conn, no resumption" \
	"${cert[@]}" --tls-no-resume
c_rate=$P_RATE c_ok=$P_OK c_cpu=$P_CPU_S c_used=$P_TLS_USED c_full=$P_FULL c_resumed=$P_RESUMED
c_handshakes=$((c_full + c_resumed))
ratio=$(bench_ratio "$b_rate" "$a_rate")
per_core=$(bench_ratio "$c_handshakes" "$c_cpu")
cpu_ratio=$(awk -v b="$b_cpu" -v a="$a_cpu" 'BEGIN { if (a + 0 == 0) print 0; else printf "%.3f", b / a }')
complete=false
[ "$a_ok$b_ok$c0_ok$c_ok" = 1111 ] && [ "$b_used" -ge "$count" ] && [ "$c_used" -ge "$handshake_count" ] &&
	complete=true
echo "ratio_vs_plain $ratio (best B / best A; rounds: $round_ratios; target >= 0.7), cpu B/A $cpu_ratio, handshakes/s per core $per_core"
echo "{\"bench\":\"tls\",\"count\":$count,\"size\":$size,\"shards\":$shards,\"tls_msgs_per_s\":$b_rate,\"plain_msgs_per_s\":$a_rate,\"ratio_vs_plain\":$ratio,\"round_ratios\":[$round_ratios],\"rounds\":$rounds,\"handshakes_per_s_per_core\":$per_core,\"handshake_msgs_per_s\":$c_rate,\"plain_per_conn_msgs_per_s\":$c0_rate,\"cpu_s\":{\"plain\":$a_cpu,\"tls\":$b_cpu,\"plain_per_conn\":$c0_cpu,\"handshakes\":$c_cpu,\"sink_plain\":$a_sink_cpu,\"sink_tls\":$b_sink_cpu},\"cpu_ratio_vs_plain\":$cpu_ratio,\"tls_deliveries\":$b_used,\"handshakes\":{\"tls_full\":$b_full,\"tls_resumed\":$b_resumed,\"handshake_phase_full\":$c_full,\"handshake_phase_resumed\":$c_resumed,\"handshake_phase_messages\":$handshake_count,\"handshake_phase_tls_deliveries\":$c_used},\"complete\":$complete}"
