# bench/lib.sh - shared helpers of the benchmark scripts (bench/bench_*.sh).
# Sourced, not run. Every script prints its report to stdout and ends with
# one JSON object on the last line; chatter goes to stderr.

bench_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$bench_root/build}"
case "$BUILD_DIR" in
/*) ;;
*) BUILD_DIR="$bench_root/$BUILD_DIR" ;;
esac

bench_log() { echo "bench: $*" >&2; }
bench_die() {
	echo "bench: $*" >&2
	exit 1
}

now_ns() { date +%s%N; }

# Seconds (3 decimals) between two now_ns readings.
bench_seconds() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", (b - a) / 1e9 }'; }

# a / b with 3 decimals (0 when b is 0).
bench_ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0) print 0; else printf "%.3f", a / b }'; }

# CPU seconds (user + system) a live process has used so far.
bench_cpu_s() {
	local tck
	tck=$(getconf CLK_TCK)
	awk -v t="$tck" '{ printf "%.3f", ($14 + $15) / t }' "/proc/$1/stat" 2>/dev/null || echo 0
}

# A TCP port nothing listens on right now, on 127.0.0.1.
bench_free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Wait (bounded, 30 s) until HOST:PORT accepts connections.
bench_wait_port() {
	local i
	for i in $(seq 1 300); do
		if (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; then return 0; fi
		sleep 0.1
	done
	return 1
}

# A scratch directory on a disk filesystem (the spool needs O_DIRECT; /tmp
# may be tmpfs). Removed by bench_cleanup.
bench_enter_work() {
	BENCH_WORK=$(mktemp -d /var/tmp/ringmail-bench.XXXXXX)
	cd "$BENCH_WORK" || bench_die "cannot enter $BENCH_WORK"
}

BENCH_PIDS=()
bench_track() { BENCH_PIDS+=("$1"); }
bench_cleanup() {
	bench_stop_tracked
	[ -n "${BENCH_WORK:-}" ] && [ -z "${BENCH_KEEP:-}" ] && rm -rf "$BENCH_WORK"
}

# Postfix smtp-sink on ADDR:PORT (extra flags after), pid in SINK_PID.
bench_start_smtp_sink() {
	local addr="$1" port="$2"
	shift 2
	local user=()
	[ "$(id -u)" = 0 ] && user=(-u root)
	/usr/sbin/smtp-sink "${user[@]}" "$@" "$addr:$port" 1000 >/dev/null 2>&1 &
	SINK_PID=$!
	bench_track "$SINK_PID"
	bench_wait_port "$addr" "$port" || bench_die "smtp-sink did not start on $addr:$port"
}

# ---- added for bench_inject.sh and bench_e2e.sh ----------------------------

# Stop (TERM, then wait) every tracked process, keep the work directory.
bench_stop_tracked() {
	local p
	for p in "${BENCH_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
	for p in "${BENCH_PIDS[@]}"; do wait "$p" 2>/dev/null; done
	BENCH_PIDS=()
}

# bench_json_num FILE KEY: the first numeric value of "KEY": in FILE (0 if none).
bench_json_num() {
	awk -v k="\"$2\":" '{
		i = index($0, k)
		if (i == 0) next
		v = substr($0, i + length(k))
		if (match(v, /^-?[0-9.eE+]+/)) { print substr(v, 1, RLENGTH); found = 1; exit }
	} END { if (!found) print 0 }' "$1" 2>/dev/null || echo 0
}

# Peak resident memory (kB, VmHWM) of a live process.
bench_peak_rss_kb() {
	awk '/^VmHWM:/ { print $2; found = 1 } END { if (!found) print 0 }' "/proc/$1/status" 2>/dev/null ||
		echo 0
}

# bench_rm_config PORT SHARDS: a ringmail configuration on stdout with one
# listener on 127.0.0.1:PORT, the spool (BENCH_SPOOL_DIR if set) and the
# delivery log in the work directory; stdin is appended (more [engine] keys
# first, then sections).
bench_rm_config() {
	cat <<EOF
[listener bench]
address = 127.0.0.1:$1

[engine]
shards = $2
spool_dir = ${BENCH_SPOOL_DIR:-$BENCH_WORK/spool}
delivery_log = $BENCH_WORK/delivery.log
free_space_reserve = 64M
EOF
	cat
}

# bench_rm_start CONF PORT: start the daemon (stderr to daemon.err), wait
# for its listener; pid in RM_PID, tracked.
bench_rm_start() {
	"${BENCH_RINGMAIL:-$BUILD_DIR/engine/ringmail}" -c "$1" 2>>daemon.err &
	RM_PID=$!
	bench_track "$RM_PID"
	if ! bench_wait_port 127.0.0.1 "$2" || ! kill -0 "$RM_PID" 2>/dev/null; then
		bench_log "ringmail did not start: $(tail -2 daemon.err)"
		return 1
	fi
}

# ---- following the delivery log without re-reading it ---------------------
# Counting Delivery lines with grep every 50 ms re-reads the whole log each
# time: at 200 000 messages (90 MB) that is 20-30 ms of a CPU per poll,
# taken from the daemon and the sink under test on a 2-CPU machine. One
# tail|awk pipeline reads each byte once instead, and says "first" after
# the first Delivery line and "done" after the COUNTth.

# bench_follow_start LOG COUNT PID: follow LOG (created empty if missing)
# while PID lives; read the words with bench_follow_wait.
# mawk waits to fill its input buffer unless told -W interactive.
bench_follow_start() {
	local awk=(awk)
	command -v mawk >/dev/null && awk=(mawk -W interactive)
	: >>"$1"
	exec {BENCH_FOLLOW_FD}< <(exec tail -c +1 -F --pid="$3" "$1" 2>/dev/null |
		"${awk[@]}" -v want="$2" '/"type":"Delivery"/ {
			n++
			if (n == 1) { print "first"; fflush() }
			if (n >= want) { print "done"; fflush(); exit }
		}')
}

# bench_follow_wait WORD PID DEADLINE_S: 0 once WORD has been read; 1 if PID
# died, the follower ended first, or DEADLINE_S seconds passed.
bench_follow_wait() {
	local line rc end=$((SECONDS + $3))
	while [ "$SECONDS" -lt "$end" ]; do
		if read -r -t 1 -u "$BENCH_FOLLOW_FD" line; then
			[ "$line" = "$1" ] && return 0
			continue
		else
			rc=$?
		fi
		[ "$rc" -gt 128 ] || return 1
		kill -0 "$2" 2>/dev/null || return 1
	done
	return 1
}

# bench_follow_stop: close the follower (tail ends with the PID it watches).
bench_follow_stop() { exec {BENCH_FOLLOW_FD}<&-; }
