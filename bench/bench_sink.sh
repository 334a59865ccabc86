#!/usr/bin/env bash
# bench-targets: bench/ringmail-sink bench/ringmail-blast
# ./bench/run sink [--quick] - is ringmail-sink fast enough to measure with?
#
# Same run, same loopback, same load, one sink at a time:
#   A. smtp-source -> Postfix smtp-sink      (the reference sink)
#   B. smtp-source -> ringmail-sink
#   C. ringmail-blast -> Postfix smtp-sink   (a faster load generator:
#   D. ringmail-blast -> ringmail-sink        the sinks' own ceilings)
# Load: SOURCES smtp-source processes of -s SESSIONS/SOURCES sessions each
# (-d: many messages per connection), MESSAGES messages of SIZE bytes in
# all; ringmail-blast with the same sessions, size and reuse.
# msgs/s: messages / wall time of the load generators. CPU: the sink
# process's user + system time (/proc/PID/stat) during the load.
#
# Last stdout line: {"sink_msgs_per_s":..,"smtp_sink_msgs_per_s":..,
# "ratio_vs_smtp_sink":..,"cpu_ratio":..,...}; ratio_vs_smtp_sink is
# B / A msgs/s (> 1: ringmail-sink faster); cpu_ratio is ringmail-sink's
# CPU per message / smtp-sink's (< 1: ringmail-sink cheaper). The blast_*
# keys are runs C and D and blast vs smtp-source into ringmail-sink.
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

messages=100000
sessions=20
sources=2
size=5000
for arg in "$@"; do
	case "$arg" in
	--quick) messages=20000 ;;
	-h | --help)
		sed -n '3,21p' "$0" | sed 's/^# \{0,1\}//' >&2
		exit 0
		;;
	*) bench_die "sink: unknown argument '$arg'" ;;
	esac
done
sink_exe="$BUILD_DIR/bench/ringmail-sink"
blast_exe="$BUILD_DIR/bench/ringmail-blast"
[ -x "$sink_exe" ] && [ -x "$blast_exe" ] || bench_die "build first (ninja -C $BUILD_DIR)"
[ -x /usr/sbin/smtp-sink ] && [ -x /usr/sbin/smtp-source ] ||
	bench_die "smtp-sink/smtp-source missing (tools/install-deps installs postfix)"

trap bench_cleanup EXIT
bench_enter_work

# The sink under test: "postfix" or "ringmail"; sets SINK_PID and PORT.
start_sink() {
	PORT=$(bench_free_port)
	if [ "$1" = postfix ]; then
		bench_start_smtp_sink 127.0.0.1 "$PORT"
	else
		"$sink_exe" -l "127.0.0.1:$PORT" --json sink.json --quiet 2>sink.err &
		SINK_PID=$!
		bench_track "$SINK_PID"
		bench_wait_port 127.0.0.1 "$PORT" || bench_die "ringmail-sink did not start"
	fi
}

stop_sink() {
	kill -TERM "$SINK_PID" 2>/dev/null
	wait "$SINK_PID" 2>/dev/null
}

# smtp-source load into PORT; sets ELAPSED (s) and SINK_CPU (s).
load_source() {
	local per=$((messages / sources)) per_sessions=$((sessions / sources))
	local cpu0 t0 t1 i pids=() rc=0
	cpu0=$(bench_cpu_s "$SINK_PID")
	t0=$(now_ns)
	for i in $(seq 1 "$sources"); do
		/usr/sbin/smtp-source -s "$per_sessions" -m "$per" -l "$size" -d \
			-t "u@sink.example" "127.0.0.1:$PORT" >/dev/null 2>>source.err &
		pids+=($!)
	done
	for i in "${pids[@]}"; do wait "$i" || rc=1; done
	t1=$(now_ns)
	[ $rc -eq 0 ] || bench_log "smtp-source reported errors: $(tail -n 3 source.err)"
	ELAPSED=$(bench_seconds "$t0" "$t1")
	SINK_CPU=$(awk -v a="$cpu0" -v b="$(bench_cpu_s "$SINK_PID")" 'BEGIN { printf "%.3f", b - a }')
}

# ringmail-blast load into PORT; sets ELAPSED, SINK_CPU, BLAST_ACCEPTED.
load_blast() {
	local cpu0 t0 t1
	cpu0=$(bench_cpu_s "$SINK_PID")
	t0=$(now_ns)
	"$blast_exe" -c "127.0.0.1:$PORT" -s "$sessions" -m "$messages" --size "$size" \
		--per-conn "$messages" --quiet --json blast.json ||
		bench_log "ringmail-blast failed"
	t1=$(now_ns)
	ELAPSED=$(bench_seconds "$t0" "$t1")
	SINK_CPU=$(awk -v a="$cpu0" -v b="$(bench_cpu_s "$SINK_PID")" 'BEGIN { printf "%.3f", b - a }')
	BLAST_ACCEPTED=$(sed -n 's/.*"accepted":\([0-9]*\).*/\1/p' blast.json)
}

sink_count() { sed -n 's/^{"tool":"ringmail-sink".*"messages":\([0-9]*\),.*/\1/p' sink.json; }
rate() { bench_ratio "$messages" "$1"; }
per_1k() { awk -v c="$1" -v m="$messages" 'BEGIN { printf "%.4f", c * 1000 / m }'; }

bench_log "sink: $messages messages x $size B, $sessions sessions, $sources smtp-source"

start_sink postfix
load_source
a_rate=$(rate "$ELAPSED") a_cpu=$SINK_CPU
stop_sink
bench_log "A smtp-source -> smtp-sink:      $a_rate msgs/s, sink cpu ${a_cpu}s"

start_sink ringmail
load_source
b_rate=$(rate "$ELAPSED") b_cpu=$SINK_CPU
stop_sink
b_count=$(sink_count)
bench_log "B smtp-source -> ringmail-sink:  $b_rate msgs/s, sink cpu ${b_cpu}s, counted $b_count"

start_sink postfix
load_blast
c_rate=$(rate "$ELAPSED") c_cpu=$SINK_CPU c_acc=$BLAST_ACCEPTED
stop_sink
bench_log "C ringmail-blast -> smtp-sink:     $c_rate msgs/s, sink cpu ${c_cpu}s, accepted $c_acc"

start_sink ringmail
load_blast
d_rate=$(rate "$ELAPSED") d_cpu=$SINK_CPU d_acc=$BLAST_ACCEPTED
stop_sink
d_count=$(sink_count)
bench_log "D ringmail-blast -> ringmail-sink: $d_rate msgs/s, sink cpu ${d_cpu}s, counted $d_count"

lost=$(( (messages - ${b_count:-0}) + (messages - ${d_count:-0}) ))
a_cpu1k=$(per_1k "$a_cpu") b_cpu1k=$(per_1k "$b_cpu")
c_cpu1k=$(per_1k "$c_cpu") d_cpu1k=$(per_1k "$d_cpu")
printf 'machine: %s, %s cores, kernel %s\n' "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)" \
	"$(nproc)" "$(uname -r)"
printf '%-34s %10s %16s\n' "run" "msgs/s" "sink cpu s/1k"
printf '%-34s %10s %16s\n' "A smtp-source -> smtp-sink" "$a_rate" "$a_cpu1k"
printf '%-34s %10s %16s\n' "B smtp-source -> ringmail-sink" "$b_rate" "$b_cpu1k"
printf '%-34s %10s %16s\n' "C ringmail-blast -> smtp-sink" "$c_rate" "$c_cpu1k"
printf '%-34s %10s %16s\n' "D ringmail-blast -> ringmail-sink" "$d_rate" "$d_cpu1k"
printf '{"sink_msgs_per_s":%s,"smtp_sink_msgs_per_s":%s,"ratio_vs_smtp_sink":%s,' \
	"$b_rate" "$a_rate" "$(bench_ratio "$b_rate" "$a_rate")"
printf '"cpu_ratio":%s,"sink_cpu_s_per_1k_msgs":%s,"smtp_sink_cpu_s_per_1k_msgs":%s,' \
	"$(bench_ratio "$b_cpu" "$a_cpu")" "$b_cpu1k" "$a_cpu1k"
printf '"blast_sink_msgs_per_s":%s,"blast_smtp_sink_msgs_per_s":%s,' "$d_rate" "$c_rate"
printf '"blast_ratio_vs_smtp_sink":%s,"blast_cpu_ratio":%s,' \
	"$(bench_ratio "$d_rate" "$c_rate")" "$(bench_ratio "$d_cpu" "$c_cpu")"
printf '"blast_vs_smtp_source":%s,"messages":%s,"size":%s,"sessions":%s,"lost":%s}\n' \
	"$(bench_ratio "$d_rate" "$b_rate")" "$messages" "$size" "$sessions" "$lost"
