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
	local p
	for p in "${BENCH_PIDS[@]}"; do
		kill -TERM "$p" 2>/dev/null
	done
	for p in "${BENCH_PIDS[@]}"; do
		wait "$p" 2>/dev/null
	done
	BENCH_PIDS=()
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
