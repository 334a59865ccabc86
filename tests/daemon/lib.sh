# lib.sh - shell helpers shared by the daemon tests (sourced, not run).
# TAP output, the daemon as a coprocess synchronised on the lines it
# prints, smtp-sink counters and delivery-log counts. The caller sets
# $ringmail (the binary) and, for the sink helpers, runs in the folder
# holding sink.out and delivery.log.

n=0
failed=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
not_ok() { n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n - $1"; }
check() { if eval "$2"; then ok "$1"; else not_ok "$1"; fi; }

# Start the daemon with "$@" as a coprocess; wait for the started line.
start() {
	coproc RM { exec "$ringmail" "$@" 2>&1; }
	DPID=$RM_PID
	exec {RM_OUT}<&"${RM[0]}"
	started=""
	while IFS= read -r -t 60 -u "$RM_OUT" line; do
		echo "# $line"
		case "$line" in
		*"ringmail: started"*) started="$line"; return 0 ;;
		esac
	done
	return 1
}

# Read output lines until one matches $1 (glob), 30 s at most.
expect() {
	while IFS= read -r -t 30 -u "$RM_OUT" line; do
		echo "# $line"
		case "$line" in $1) return 0 ;; esac
	done
	return 1
}

# SIGTERM; true if the daemon said "stopped" and exited 0.
stop() {
	kill -TERM "$DPID"
	expect "*ringmail: stopped*"
	local seen=$?
	wait "$DPID"
	local rc=$?
	DPID=""
	[ $seen -eq 0 ] && [ $rc -eq 0 ]
}

stop_sink() {
	kill -TERM "$SINK_PID" 2>/dev/null
	wait "$SINK_PID" 2>/dev/null
	SINK_PID=""
}

# The sink's latest "mesg=" counter (lines end in CR).
sink_messages() {
	tr '\r' '\n' <sink.out | sed -n 's/.*mesg=\([0-9]*\).*/\1/p' | tail -n 1
}

# Lines of type $1 in the delivery log.
log_count() {
	local count
	count=$(grep -c "\"type\":\"$1\"" delivery.log 2>/dev/null)
	echo "${count:-0}"
}
