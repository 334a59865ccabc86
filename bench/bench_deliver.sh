#!/usr/bin/env bash
# bench-targets: engine/ringmail tools/ringmail-spool
# ./bench/run deliver [--quick] - delivery only (issue 3).
#
# A spool pre-loaded with COUNT messages of 5 KB (ringmail-spool load, the
# real spool code) is delivered by the daemon to Postfix smtp-sink; in the
# same run, the raw one-hop limit: smtp-source -d straight into the same
# kind of sink, same message size, same number of connections.
#   W1: one domain, one sink on 127.0.0.1, 20 connections.
#   W2: 1000 domains, routed to 10 sinks on 127.0.0.1 .. 127.0.0.10, 2
#       connections per domain, node max_connections 40; raw: 10
#       smtp-source, one per sink, 4 sessions each.
# ringmail's time runs from the daemon's start (recovery included) to the
# last Delivery line; the delivery phase alone (first to last Delivery
# line) is reported beside it. CPU is the daemon's user + system time.
#
# Last stdout line: {"msgs_per_s":..,"ratio_vs_raw":..,"cpu_s_per_1k_msgs":..,
# "workloads":{...}} with the W1 figures at top level.
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

count=200000
size=5120
for arg in "$@"; do
	case "$arg" in
	--quick) count=20000 ;;
	-h | --help)
		sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//' >&2
		exit 0
		;;
	*) bench_die "deliver: unknown argument '$arg'" ;;
	esac
done
ringmail="$BUILD_DIR/engine/ringmail"
spool_tool="$BUILD_DIR/tools/ringmail-spool"
[ -x "$ringmail" ] && [ -x "$spool_tool" ] || bench_die "build first (ninja -C $BUILD_DIR)"
[ -x /usr/sbin/smtp-sink ] || bench_die "smtp-sink missing (tools/install-deps installs postfix)"
shards=$(nproc)
[ "$shards" -gt 4 ] && shards=4

trap bench_cleanup EXIT
bench_enter_work

# raw WORKLOAD: smtp-source into fresh sinks; prints seconds.
raw_run() {
	local sinks="$1" sessions="$2" port pids=() t0 t1 i per
	port=$(bench_free_port)
	for i in $(seq 1 "$sinks"); do
		bench_start_smtp_sink "127.0.0.$i" "$port"
	done
	per=$((count / sinks))
	t0=$(now_ns)
	for i in $(seq 1 "$sinks"); do
		/usr/sbin/smtp-source -d -s "$sessions" -m "$per" -l "$size" \
			-f sender@bench.test -t "rcpt@d$i.test" "127.0.0.$i:$port" >/dev/null &
		pids+=($!)
	done
	for i in "${pids[@]}"; do wait "$i"; done
	t1=$(now_ns)
	bench_stop_tracked
	bench_seconds "$t0" "$t1"
}

# delivered LOG: Delivery lines so far.
delivered() { grep -c '"type":"Delivery"' "$1" 2>/dev/null || true; }

# Config for the daemon: $1 domains, $2 sinks, $3 port, $4 per-domain
# connections, $5 node connections.
write_config() {
	local domains="$1" sinks="$2" port="$3" k d list
	cat <<EOF
[engine]
shards = $shards
spool_dir = $BENCH_WORK/spool
delivery_log = $BENCH_WORK/delivery.log
max_connections = $5
free_space_reserve = 64M

[destination]
max_connections = $4
max_messages_per_connection = 1000000
idle_timeout = 30s
EOF
	# A long list continues on indented lines (10 domains a line).
	for k in $(seq 1 "$sinks"); do
		printf '\n[route sink%u]\nhosts = 127.0.0.%u:%u\ndomains =' "$k" "$k" "$port"
		list=0
		for d in $(seq $((k - 1)) "$sinks" $((domains - 1))); do
			[ "$list" -gt 0 ] && printf ','; [ $((list % 10)) = 0 ] && [ "$list" -gt 0 ] && printf '\n   '
			printf ' d%u.test' "$d"
			list=$((list + 1))
		done
		printf '\n'
	done
}

# ringmail WORKLOAD: load, start, wait for every Delivery line. Sets
# RM_TOTAL_S, RM_PHASE_S, RM_CPU_S, RM_OK.
ringmail_run() {
	local domains="$1" sinks="$2" per_domain="$3" node="$4" port i t0 t1 dpid first=0
	port=$(bench_free_port)
	rm -rf spool delivery.log
	"$spool_tool" -d spool load --shards "$shards" --count "$count" --size "$size" \
		--domains "$domains" >/dev/null || bench_die "ringmail-spool load failed"
	write_config "$domains" "$sinks" "$port" "$per_domain" "$node" >bench.conf
	for i in $(seq 1 "$sinks"); do bench_start_smtp_sink "127.0.0.$i" "$port"; done
	sync
	t0=$(now_ns)
	"$ringmail" -c bench.conf 2>daemon.err &
	dpid=$!
	bench_follow_start delivery.log "$count" "$dpid"
	RM_OK=0
	if bench_follow_wait first "$dpid" 300; then
		first=$(now_ns)
		bench_follow_wait done "$dpid" 300 && RM_OK=1
	fi
	t1=$(now_ns)
	RM_CPU_S=$(bench_cpu_s "$dpid")
	kill -TERM "$dpid" 2>/dev/null
	wait "$dpid" 2>/dev/null
	bench_stop_tracked
	bench_follow_stop
	RM_TOTAL_S=$(bench_seconds "$t0" "$t1")
	[ "$first" = 0 ] && first=$t1
	RM_PHASE_S=$(bench_seconds "$first" "$t1")
	[ "$RM_OK" = 1 ] || bench_log "ringmail delivered $(delivered delivery.log) of $count"
}

json_workloads=""
report() {
	local name="$1" raw_s="$2" raw_rate rm_rate phase_rate ratio cpu1k
	raw_rate=$(bench_ratio "$count" "$raw_s")
	rm_rate=$(bench_ratio "$count" "$RM_TOTAL_S")
	phase_rate=$(bench_ratio "$count" "$RM_PHASE_S")
	ratio=$(bench_ratio "$rm_rate" "$raw_rate")
	cpu1k=$(awk -v c="$RM_CPU_S" -v n="$count" 'BEGIN { printf "%.4f", c * 1000 / n }')
	printf '%-4s raw %8s msg/s  ringmail %8s msg/s (delivery phase %8s)  ratio %s  cpu %s s/1k  %s\n' \
		"$name" "$raw_rate" "$rm_rate" "$phase_rate" "$ratio" "$cpu1k" \
		"$([ "$RM_OK" = 1 ] && echo complete || echo INCOMPLETE)"
	[ -n "$json_workloads" ] && json_workloads="$json_workloads,"
	json_workloads="$json_workloads\"$name\":{\"raw_msgs_per_s\":$raw_rate,\"msgs_per_s\":$rm_rate,\"delivery_phase_msgs_per_s\":$phase_rate,\"ratio_vs_raw\":$ratio,\"phase_ratio_vs_raw\":$(bench_ratio "$phase_rate" "$raw_rate"),\"cpu_s_per_1k_msgs\":$cpu1k,\"complete\":$([ "$RM_OK" = 1 ] && echo true || echo false)}"
	eval "W_${name}_rate=$rm_rate W_${name}_ratio=$ratio W_${name}_cpu=$cpu1k"
}

echo "deliver: $count messages of $size bytes, $shards shards, $(nproc) CPUs"
raw_s=$(raw_run 1 20)
ringmail_run 1 1 20 1000
report W1 "$raw_s"
raw_s=$(raw_run 10 4)
ringmail_run 1000 10 2 40
report W2 "$raw_s"
echo "{\"bench\":\"deliver\",\"count\":$count,\"size\":$size,\"shards\":$shards,\"msgs_per_s\":$W_W1_rate,\"ratio_vs_raw\":$W_W1_ratio,\"cpu_s_per_1k_msgs\":$W_W1_cpu,\"workloads\":{$json_workloads}}"
