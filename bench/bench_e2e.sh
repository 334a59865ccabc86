#!/usr/bin/env bash
# bench-targets: engine/ringmail bench/ringmail-sink bench/ringmail-blast
# ./bench/run e2e [--quick] - end to end against Postfix and the limit (issue 5).
#
# For each workload, in this run, each leg from an empty queue and a fresh
# ringmail-sink, until the sink has received every accepted message:
#   raw       smtp-source -d -s 20 straight into the sink (no queue, no
#             disk): the one-hop limit, best of two runs (not run for W4,
#             whose reference is the time its rate limit allows);
#   postfix   a private Postfix (bench/postfix.sh): durable queue,
#             transport_maps sending each domain to its sink address;
#   ringmail  the daemon, same routes and limits.
# Postfix and ringmail are fed by ringmail-blast -s 20 (pipelined), which
# gives the injection latency and stamps each message with an X-Blast-Id
# the sink logs, so lost and duplicated messages are counted exactly.
#
#   W1  COUNT x 5 KB to one domain (sink 127.0.0.1)
#   W2  COUNT x 5 KB over 1000 domains, Zipf(1), sinks on 127.0.0.1..10
#   W3  COUNT/10 x 100 KB to one domain
#   W4  COUNT/4 x 5 KB over 50 domains, Zipf(1), 5 connections and 100
#       msgs/s per domain, against a sink answering 421 above 5
#       connections per domain; reference: the time the rate allows the
#       busiest domain ((messages - burst) / 100 s).
# COUNT is 200000 (--quick: 5000). Postfix runs at a few hundred msgs/s
# here, so it gets a tenth of each count (W4: a fifth): rates are compared,
# not times. Limits: 20 connections per destination (Postfix's default
# destination concurrency); Postfix keeps its default process limit (100
# deliveries at once; idle cached connections sit in scache, outside it),
# ringmail its default node limit (1000 connections, idle ones included,
# with delivery_connections raised to match, since an idle connection
# holds its slot);
# both close an idle connection after 2 s (Postfix's
# smtp_connection_cache_time_limit), and reuse it without a count limit;
# in W4 Postfix gets concurrency 5 but no rate limit (its rate delay
# counts whole seconds: 1 msg/s per destination at best).
#
# msgs/s: messages the sink received, from the first injection to the last
# message at the sink. A leg whose server dies is marked "server_died" and
# "complete":false (every leg that lost a message is incomplete).
# CPU is the daemon's user + system time (Postfix: the master and every
# child, the exited ones included). Peak RSS: ringmail's VmHWM; Postfix's
# largest sampled sum of its processes' PSS.
#
# BENCH_LEGS="raw postfix ringmail" (the default) picks legs; W1..W4 as
# arguments pick workloads; BENCH_KEEP=1 keeps the work directory.
#
# Last stdout line: one JSON object, W1's ringmail figures at top level,
# every workload and leg under "workloads".
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
. "$(dirname "${BASH_SOURCE[0]}")/postfix.sh"

count=200000
quick=false
only=""
for arg in "$@"; do
	case "$arg" in
	--quick) count=5000 quick=true ;;
	W[1-4]) only="$only $arg" ;;
	-h | --help)
		sed -n '3,37p' "$0" | sed 's/^# \{0,1\}//' >&2
		exit 0
		;;
	*) bench_die "e2e: unknown argument '$arg'" ;;
	esac
done
[ -n "$only" ] || only="W1 W2 W3 W4"
sink_bin="$BUILD_DIR/bench/ringmail-sink"
blast_bin="$BUILD_DIR/bench/ringmail-blast"
if [ ! -x "$BUILD_DIR/engine/ringmail" ] || [ ! -x "$sink_bin" ] || [ ! -x "$blast_bin" ]; then
	bench_die "build first (ninja -C $BUILD_DIR engine/ringmail bench/ringmail-sink bench/ringmail-blast)"
fi
for p in smtp-source postfix postconf; do
	[ -x "/usr/sbin/$p" ] || bench_die "/usr/sbin/$p missing (tools/install-deps installs postfix)"
done
shards=$(nproc)
[ "$shards" -gt 4 ] && shards=4
sessions=20
legs="${BENCH_LEGS:-raw postfix ringmail}"
# ringmail's per-shard pool of connection slots: an idle connection keeps
# its slot for idle_timeout, so 1000 over the node (its default
# max_connections), as Postfix's idle cached connections do not take a
# delivery process from other destinations.
rm_slots=$((1000 / shards))

trap 'pf_stop; bench_cleanup' EXIT
trap 'exit 130' INT TERM
bench_enter_work

# ---- the workload being run (set by workload) ----
W="" N=0 PF_N=0 SIZE=0 DOMAINS=1 ZIPF=0 SINKS=1 PER_DOMAIN=20 RATE=0

workload() {
	W=$1 N=$2 PF_N=$3 SIZE=$4 DOMAINS=$5 ZIPF=$6 SINKS=$7 PER_DOMAIN=$8 RATE=$9
}

# A free port other than $1 (two quick picks can return the same one).
other_port() {
	local p _
	for _ in 1 2 3 4 5 6 7 8; do
		p=$(bench_free_port)
		[ "$p" != "$1" ] && break
	done
	echo "$p"
}

# Sink address of domain index K (blast's d0.test, d1.test, ...).
sink_host() { echo "127.0.0.$(($1 % SINKS + 1))"; }

# sink_start PORT: one ringmail-sink listening on every sink address.
sink_start() {
	local args=() k
	for k in $(seq 1 "$SINKS"); do args+=(-l "127.0.0.$k:$1"); done
	[ "$W" = W4 ] && args+=(--421-over "$PER_DOMAIN")
	rm -f sink.stats sink.json sink.ids
	"$sink_bin" "${args[@]}" --threads 1 --stats sink.stats --json sink.json \
		--log-ids sink.ids --quiet 2>>sink.err &
	SINK_PID=$!
	bench_track "$SINK_PID"
	bench_wait_port 127.0.0.1 "$1" || bench_die "ringmail-sink did not start: $(tail -1 sink.err)"
}

sink_count() { bench_json_num sink.stats messages; }

# Stop everything tracked (the sink writes sink.json on SIGTERM).
legs_stop() { bench_stop_tracked; }

# blast_start PORT COUNT: ringmail-blast in the background, pid BLAST_PID.
blast_start() {
	local zipf=()
	[ "$ZIPF" != 0 ] && zipf=(--zipf "$ZIPF")
	rm -f blast.json
	"$blast_bin" -c "127.0.0.1:$1" -s "$sessions" -m "$2" --size "$SIZE" \
		--domains "$DOMAINS" "${zipf[@]}" --domain-fmt 'd%u.test' \
		--json blast.json --quiet --timeout 600 2>>blast.err &
	BLAST_PID=$!
	bench_track "$BLAST_PID"
}

# wait_delivered COUNT DEADLINE_S SAMPLE_FN: poll until blast has ended and
# the sink holds every accepted message (or the deadline, or SERVER_PID
# dies). Sets T_END,
# ACCEPTED, PEAK_KB (the largest SAMPLE_FN reading, sampled once a second).
wait_delivered() {
	local want="$1" deadline=$(($(date +%s) + $2)) sample="$3" i=0 n kb blast_done=0
	ACCEPTED=$want PEAK_KB=0 SERVER_DIED=0
	while [ "$(date +%s)" -lt "$deadline" ]; do
		if ! kill -0 "$SERVER_PID" 2>/dev/null; then
			bench_log "$W: the server under test (pid $SERVER_PID) died"
			SERVER_DIED=1
			break
		fi
		if [ "$blast_done" = 0 ] && ! kill -0 "$BLAST_PID" 2>/dev/null; then
			wait "$BLAST_PID" 2>/dev/null ||
				bench_log "$W: ringmail-blast failed: $(tail -1 blast.err)"
			blast_done=1
			ACCEPTED=$(bench_json_num blast.json accepted)
		fi
		n=$(sink_count)
		if [ "$blast_done" = 1 ] && [ "${n:-0}" -ge "$ACCEPTED" ]; then
			break
		fi
		if [ $((i % 10)) = 0 ]; then
			kb=$($sample)
			[ "${kb:-0}" -gt "$PEAK_KB" ] && PEAK_KB=$kb
		fi
		i=$((i + 1))
		sleep 0.1
	done
	T_END=$(now_ns)
	[ "$blast_done" = 1 ] || [ "$SERVER_DIED" = 1 ] ||
		bench_log "$W: ringmail-blast still running at the deadline"
}

# After the sink has stopped: LOST, DUP, R421 from its id log and summary.
sink_verdict() {
	local total unique
	[ -f sink.ids ] || bench_log "$W: the sink left no id log: $(tail -1 sink.err)"
	total=$(cat sink.ids 2>/dev/null | wc -l)
	unique=$(sort -u sink.ids 2>/dev/null | wc -l)
	DUP=$((total - unique))
	LOST=$((ACCEPTED - unique))
	[ "$LOST" -lt 0 ] && LOST=0
	R421=$(bench_json_num sink.json 421s)
}

# Per-leg JSON and table row. leg_record SYSTEM RATE ELAPSED CPU1K RSS P99 COUNT
json_w=""
leg_record() {
	local sys=$1 rate=$2 el=$3 cpu=$4 rss=$5 p99=$6 n=$7
	local ok=true
	[ "$LOST" = 0 ] && [ "${SERVER_DIED:-0}" = 0 ] || ok=false
	printf '%-4s %-9s %7s msgs %9s msgs/s %8s s  cpu %8s s/1k  rss %7s kB  p99 %7s ms  lost %s dup %s 421s %s%s\n' \
		"$W" "$sys" "$n" "$rate" "$el" "$cpu" "$rss" "$p99" "$LOST" "$DUP" "$R421" \
		"$([ "${SERVER_DIED:-0}" = 1 ] && echo '  SERVER DIED')"
	json_w="$json_w${json_w:+,}\"$sys\":{\"complete\":$ok,\"server_died\":$([ "${SERVER_DIED:-0}" = 1 ] && echo true || echo false),\"messages\":$n,\"msgs_per_s\":$rate,\"elapsed_s\":$el,\"cpu_s_per_1k_msgs\":$cpu,\"peak_rss_kb\":$rss,\"p99_inject_ms\":$p99,\"lost\":$LOST,\"duplicated\":$DUP,\"421s\":$R421}"
	TOTAL_LOST=$((TOTAL_LOST + LOST))
	TOTAL_DUP=$((TOTAL_DUP + DUP))
}
TOTAL_LOST=0
TOTAL_DUP=0

per1k() { awk -v a="$1" -v b="$2" -v n="$3" 'BEGIN { if (n == 0) print 0; else printf "%.4f", (b - a) * 1000 / n }'; }
blast_p99_ms() { awk -v u="$(bench_json_num blast.json p99_latency_us)" 'BEGIN { printf "%.2f", u / 1000 }'; }

# ---- raw: smtp-source -d into the sink ----
# One raw run: sets RUN_RATE, RUN_S, RUN_LOST.
raw_once() {
	local port t0 k per pids=() s=$((sessions / SINKS)) i
	[ "$s" -lt 1 ] && s=1
	per=$((N / SINKS))
	port=$(bench_free_port)
	sink_start "$port"
	t0=$(now_ns)
	for k in $(seq 1 "$SINKS"); do
		/usr/sbin/smtp-source -d -s "$s" -m "$per" -l "$SIZE" -f sender@bench.test \
			-t "rcpt@d$((k - 1)).test" "127.0.0.$k:$port" >/dev/null 2>>source.err &
		pids+=($!)
	done
	for i in "${pids[@]}"; do wait "$i"; done
	ACCEPTED=$((per * SINKS))
	for i in $(seq 1 100); do
		[ "$(sink_count)" -ge "$ACCEPTED" ] && break
		sleep 0.1
	done
	T_END=$(now_ns)
	legs_stop
	RUN_LOST=$((ACCEPTED - $(bench_json_num sink.json messages)))
	RUN_S=$(bench_seconds "$t0" "$T_END")
	RUN_RATE=$(bench_ratio "$ACCEPTED" "$RUN_S")
}

# The limit is the best of two runs (a single one is noisy here); the
# messages lost are those of both.
raw_leg() {
	local best_s
	raw_once
	RAW_RATE=$RUN_RATE best_s=$RUN_S LOST=$RUN_LOST
	raw_once
	LOST=$((LOST + RUN_LOST))
	if awk -v a="$RUN_RATE" -v b="$RAW_RATE" 'BEGIN { exit !(a > b) }'; then
		RAW_RATE=$RUN_RATE best_s=$RUN_S
	fi
	DUP=0 R421=0
	leg_record raw "$RAW_RATE" "$best_s" null null null "$ACCEPTED"
}

# ---- Postfix ----
pf_configure() {
	local k
	pf_init "$BENCH_WORK/pf" "$1" || bench_die "pf_init failed"
	for k in $(seq 0 $((DOMAINS - 1))); do pf_route "d$k.test" "$(sink_host "$k"):$2"; done
	pf_set default_destination_concurrency_limit="$PER_DOMAIN" \
		smtp_destination_concurrency_limit="$PER_DOMAIN"
	# No rate limit for Postfix: its only knob, default_destination_rate_delay,
	# counts in whole seconds (1s = 1 msg/s per destination, a hundredth
	# of W4's rate; "10ms" stalls the queue), so in W4 it gets the
	# concurrency limit alone.
}

pf_peak_sample() { pf_pss_kb; }

postfix_leg() {
	local pport sport t0 c0 c1 p99
	pport=$(bench_free_port)
	sport=$(other_port "$pport")
	rm -rf pf
	pf_configure "$pport" "$sport"
	sink_start "$sport"
	pf_start || bench_die "private postfix did not start"
	bench_wait_port 127.0.0.1 "$pport" || bench_die "postfix smtpd not listening"
	c0=$(pf_cpu_s)
	t0=$(now_ns)
	SERVER_PID=$PF_MASTER_PID
	blast_start "$pport" "$PF_N"
	wait_delivered "$PF_N" $((120 + PF_N / 20)) pf_peak_sample
	c1=$(pf_cpu_s)
	[ "$SERVER_DIED" = 1 ] && c1=$c0
	pf_wait_empty 10 || bench_log "$W: postfix queue not empty: $(pf_queue_count) files"
	pf_stop
	p99=$(blast_p99_ms)
	legs_stop
	sink_verdict
	PF_RATE=$(bench_ratio "$((ACCEPTED - LOST))" "$(bench_seconds "$t0" "$T_END")")
	PF_CPU=$(per1k "$c0" "$c1" "$ACCEPTED")
	[ "$SERVER_DIED" = 1 ] && PF_CPU=null
	PF_ELAPSED=$(bench_seconds "$t0" "$T_END")
	leg_record postfix "$PF_RATE" "$PF_ELAPSED" "$PF_CPU" "$PEAK_KB" "$p99" "$ACCEPTED"
}

# ---- ringmail ----
rm_routes() {
	local sport="$1" k d list
	for k in $(seq 1 "$SINKS"); do
		printf '\n[route sink%u]\nhosts = 127.0.0.%u:%u\ndomains =' "$k" "$k" "$sport"
		list=0
		for d in $(seq $((k - 1)) "$SINKS" $((DOMAINS - 1))); do
			[ "$list" -gt 0 ] && printf ','
			[ $((list % 10)) = 0 ] && [ "$list" -gt 0 ] && printf '\n   '
			printf ' d%u.test' "$d"
			list=$((list + 1))
		done
		printf '\n'
	done
}

rm_configure() {
	{
		echo "delivery_connections = $rm_slots"
		echo
		echo "[destination]"
		echo "max_connections = $PER_DOMAIN"
		echo "max_messages_per_connection = 100000"
		echo "idle_timeout = 2s"
		[ "$RATE" != 0 ] && echo "max_message_rate = $RATE/s"
		rm_routes "$2"
	} | bench_rm_config "$1" "$shards"
}

rm_peak_sample() { echo 0; }

ringmail_leg() {
	local rport sport t0 c0 c1 p99 i
	rport=$(bench_free_port)
	sport=$(other_port "$rport")
	rm -rf spool delivery.log
	rm_configure "$rport" "$sport" >e2e.conf
	sink_start "$sport"
	bench_rm_start e2e.conf "$rport" || bench_die "ringmail did not start"
	c0=$(bench_cpu_s "$RM_PID")
	t0=$(now_ns)
	SERVER_PID=$RM_PID
	blast_start "$rport" "$N"
	wait_delivered "$N" $((120 + N / 100)) rm_peak_sample
	c1=$(bench_cpu_s "$RM_PID")
	PEAK_KB=$(bench_peak_rss_kb "$RM_PID")
	[ "$SERVER_DIED" = 1 ] && c1=$c0 PEAK_KB=null
	# Let the daemon log its last deliveries, so late duplicates show.
	for i in $(seq 1 50); do
		[ "$(grep -c '"type":"Delivery"' delivery.log 2>/dev/null)" -ge "$ACCEPTED" ] && break
		sleep 0.1
	done
	p99=$(blast_p99_ms)
	legs_stop
	sink_verdict
	RM_RATE=$(bench_ratio "$((ACCEPTED - LOST))" "$(bench_seconds "$t0" "$T_END")")
	RM_CPU=$(per1k "$c0" "$c1" "$ACCEPTED")
	[ "$SERVER_DIED" = 1 ] && RM_CPU=null
	RM_ELAPSED=$(bench_seconds "$t0" "$T_END")
	RM_MAXD=$(blast_max_domain)
	leg_record ringmail "$RM_RATE" "$RM_ELAPSED" "$RM_CPU" "$PEAK_KB" "$p99" "$ACCEPTED"
}

# Messages accepted for the busiest domain (blast's per-domain counts).
blast_max_domain() {
	python3 -c 'import json,sys
d = json.load(open(sys.argv[1])).get("domains", {})
print(max([v.get("accepted", 0) for v in d.values()] or [0]))' blast.json 2>/dev/null || echo 0
}

json_all=""
run_workload() {
	local extra=""
	json_w=""
	RAW_RATE=0
	echo "$W: $N x $SIZE B (postfix $PF_N), $DOMAINS domain(s)$([ "$ZIPF" != 0 ] && echo " zipf $ZIPF"), $SINKS sink address(es), $PER_DOMAIN conns/domain$([ "$RATE" != 0 ] && echo ", $RATE msgs/s/domain")"
	PF_RATE=0 PF_CPU=0 PF_ELAPSED=0 RM_RATE=0 RM_CPU=0 RM_ELAPSED=0 RM_MAXD=0
	case " $legs " in *" raw "*) [ "$W" != W4 ] && raw_leg ;; esac
	case " $legs " in *" postfix "*) postfix_leg ;; esac
	case " $legs " in *" ringmail "*) ringmail_leg ;; esac
	if [ "$W" = W4 ]; then
		# Token bucket: the busiest domain's messages beyond the burst
		# (one second's worth) need (messages - burst) / rate seconds.
		local lim
		lim=$(awk -v m="$RM_MAXD" -v r="$RATE" 'BEGIN { x = (m - r) / r; if (x < 0) x = 0; printf "%.3f", x }')
		extra=",\"limit_s\":$lim,\"elapsed_vs_limit\":$(bench_ratio "$RM_ELAPSED" "$lim"),\"postfix_rate_limited\":false"
		echo "$W  rate limit allows ringmail $lim s (took $RM_ELAPSED s, x$(bench_ratio "$RM_ELAPSED" "$lim"), target <= 1.1); postfix (not rate-limited) took $PF_ELAPSED s"
	else
		extra=",\"ratio_vs_raw\":$(bench_ratio "$RM_RATE" "$RAW_RATE")"
		echo "$W  ringmail/raw $(bench_ratio "$RM_RATE" "$RAW_RATE") (target >= 0.5)  ringmail/postfix $(bench_ratio "$RM_RATE" "$PF_RATE") (target >= 12)  cpu postfix/ringmail $(bench_ratio "$PF_CPU" "$RM_CPU") (target >= 10)"
	fi
	json_all="$json_all${json_all:+,}\"$W\":{$json_w,\"ratio_vs_postfix\":$(bench_ratio "$RM_RATE" "$PF_RATE"),\"cpu_ratio_postfix_vs_ringmail\":$(bench_ratio "$PF_CPU" "$RM_CPU")$extra}"
	eval "${W}_rate=$RM_RATE ${W}_raw=$(bench_ratio "$RM_RATE" "$RAW_RATE") ${W}_pf=$(bench_ratio "$RM_RATE" "$PF_RATE")"
}

echo "e2e: $(nproc) CPUs, $shards shards, kernel $(uname -r), postfix $(postconf -d -h mail_version 2>/dev/null)$($quick && echo ', quick')"
for w in $only; do
	case "$w" in
	#                     count       postfix       size   domains zipf sinks conns rate
	W1) workload W1 "$count" $((count / 10)) 5120 1 0 1 20 0 ;;
	W2) workload W2 "$count" $((count / 10)) 5120 1000 1.0 10 20 0 ;;
	W3) workload W3 $((count / 10)) $((count / 100)) 102400 1 0 1 20 0 ;;
	W4) workload W4 $((count / 4)) $((count / 20)) 5120 50 1.0 1 5 100 ;;
	esac
	run_workload
done
first=${only# }
first=${first%% *}
top_rate=0 top_raw=0 top_pf=0
eval "top_rate=\${${first}_rate} top_raw=\${${first}_raw} top_pf=\${${first}_pf}"
echo "{\"bench\":\"e2e\",\"quick\":$quick,\"count\":$count,\"shards\":$shards,\"cpus\":$(nproc),\"workload\":\"$first\",\"msgs_per_s\":$top_rate,\"ratio_vs_raw\":$top_raw,\"ratio_vs_postfix\":$top_pf,\"lost\":$TOTAL_LOST,\"duplicated\":$TOTAL_DUP,\"workloads\":{$json_all}}"
