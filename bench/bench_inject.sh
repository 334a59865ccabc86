#!/usr/bin/env bash
# bench-targets: engine/ringmail bench/ringmail-blast
# ./bench/run inject [--quick] - injection only (issue 4).
#
# The same client, `smtp-source -d -s 20 -l 5120`, pushes COUNT messages
# (200000; --quick 20000), in the same run, into:
#   raw       Postfix smtp-sink: the non-durable one-hop limit (best of
#             two runs);
#   ringmail  the daemon with [engine] hold = yes: every 250 is a durable
#             group commit, nothing is delivered;
#   postfix   a private Postfix (bench/postfix.sh: durable queue, a file
#             per message fsynced before the 250). Delivery is kept out of
#             the measurement with the smtpd access action HOLD
#             (check_client_access static:HOLD): cleanup writes each
#             message into the hold queue, which the queue manager never
#             scans, so the figure is smtpd + cleanup + fsync alone.
#             Postfix gets COUNT/10 messages (it runs at a few hundred
#             msgs/s here); rates are compared, not times.
# smtp-source does not pipeline and reports no latency, so a second
# ringmail leg (ringmail_blast) sends COUNT messages with ringmail-blast
# -s 20, pipelined, into a fresh spool: p99_ack_ms is its p99 from the
# final dot to the 250.
# Every leg is checked: ringmail logs COUNT Reception lines and delivers
# none; Postfix holds PF_COUNT queue files.
#
# Where the time goes (as root, with losetup; "null" otherwise): the
# smtp-source leg again with the spool on ext4 over a loop device whose
# backing file is in /dev/shm. Same daemon, same group commits, but a
# cache flush costs nothing: its ratio to raw is what the protocol side
# costs, and the rest of the gap is waiting for the disk. The disk's own
# price is measured too: the mean time of a 4 KiB O_DIRECT RWF_DSYNC
# overwrite, queue depth 1, on the spool's filesystem (dd, 400 writes).
#
# Last stdout line: {"msgs_per_s":..,"ratio_vs_raw":..,"ratio_vs_postfix":..,
# "p99_ack_ms":..,"legs":{...}} - msgs_per_s is ringmail's smtp-source leg.
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
. "$(dirname "${BASH_SOURCE[0]}")/postfix.sh"

count=200000
size=5120
sessions=20
for arg in "$@"; do
	case "$arg" in
	--quick) count=20000 ;;
	-h | --help)
		sed -n '3,27p' "$0" | sed 's/^# \{0,1\}//' >&2
		exit 0
		;;
	*) bench_die "inject: unknown argument '$arg'" ;;
	esac
done
pf_count=$((count / 10))
ringmail="$BUILD_DIR/engine/ringmail"
blast="$BUILD_DIR/bench/ringmail-blast"
if [ ! -x "$ringmail" ] || [ ! -x "$blast" ]; then
	bench_die "build first (ninja -C $BUILD_DIR engine/ringmail bench/ringmail-blast)"
fi
for p in smtp-sink smtp-source postfix postconf; do
	[ -x "/usr/sbin/$p" ] || bench_die "/usr/sbin/$p missing (tools/install-deps installs postfix)"
done
shards=$(nproc)
[ "$shards" -gt 4 ] && shards=4

trap 'pf_stop; bench_stop_tracked; ramdisk_stop; bench_cleanup' EXIT
trap 'exit 130' INT TERM
bench_enter_work

# source PORT N: smtp-source into 127.0.0.1:PORT; prints seconds.
source_run() {
	local t0 t1
	t0=$(now_ns)
	/usr/sbin/smtp-source -d -s "$sessions" -m "$2" -l "$size" \
		-f sender@bench.test -t rcpt@d1.test "127.0.0.1:$1" >/dev/null ||
		bench_log "smtp-source into port $1 failed"
	t1=$(now_ns)
	bench_seconds "$t0" "$t1"
}

# The limit is the best of two runs (a single one is noisy here).
raw_leg() {
	local port s rate _
	RAW_RATE=0
	for _ in 1 2; do
		port=$(bench_free_port)
		bench_start_smtp_sink 127.0.0.1 "$port"
		s=$(source_run "$port" "$count")
		bench_stop_tracked
		rate=$(bench_ratio "$count" "$s")
		RAW_RATE=$(awk -v a="$RAW_RATE" -v b="$rate" 'BEGIN { print (b > a) ? b : a }')
	done
}

# ringmail_leg KIND: KIND source or blast, from an empty spool. Sets
# RM_RATE, RM_CPU1K, RM_RSS_KB, RM_OK and (blast) RM_P99_MS, RM_P50_MS.
ringmail_leg() {
	local kind="$1" port pid s c0 c1 n _
	port=$(bench_free_port)
	rm -rf spool delivery.log blast.json
	bench_rm_config "$port" "$shards" >inject.conf <<EOF
hold = yes
[route nowhere]
domains = *
hosts = 127.0.0.2:9
EOF
	bench_rm_start inject.conf "$port" || return 1
	pid=$RM_PID
	c0=$(bench_cpu_s "$pid")
	if [ "$kind" = source ]; then
		s=$(source_run "$port" "$count")
	else
		"$blast" -c "127.0.0.1:$port" -s "$sessions" -m "$count" --size "$size" \
			--domains 1 --domain-fmt 'd%u.test' --json blast.json --quiet ||
			bench_log "ringmail-blast failed"
		s=$(bench_json_num blast.json elapsed_s)
		RM_P99_MS=$(awk -v u="$(bench_json_num blast.json p99_latency_us)" 'BEGIN { printf "%.2f", u / 1000 }')
		RM_P50_MS=$(awk -v u="$(bench_json_num blast.json p50_latency_us)" 'BEGIN { printf "%.2f", u / 1000 }')
	fi
	local alive=true
	kill -0 "$pid" 2>/dev/null || alive=false
	c1=$(bench_cpu_s "$pid")
	RM_RSS_KB=$(bench_peak_rss_kb "$pid")
	if [ "$alive" = false ]; then
		bench_log "ringmail $kind: the daemon died: $(tail -1 daemon.err)"
		c1=$c0 RM_RSS_KB=null
	fi
	# Every acknowledged message is logged (Reception), none delivered.
	for _ in $(seq 1 100); do
		n=$(grep -c '"type":"Reception"' delivery.log 2>/dev/null)
		[ "${n:-0}" -ge "$count" ] && break
		sleep 0.1
	done
	RM_DELIVERED=$(grep -c '"type":"Delivery"' delivery.log 2>/dev/null)
	RM_OK=$([ "$alive" = true ] && [ "${n:-0}" = "$count" ] && [ "${RM_DELIVERED:-0}" = 0 ] &&
		echo true || echo false)
	[ "$RM_OK" = true ] || bench_log "ringmail $kind: $n receptions, $RM_DELIVERED deliveries for $count sent"
	bench_stop_tracked
	RM_RATE=$(bench_ratio "$count" "$s")
	RM_CPU1K=$(awk -v a="$c0" -v b="$c1" -v n="$count" 'BEGIN { printf "%.4f", (b - a) * 1000 / n }')
}

# ramdisk_start: ext4 on a loop device over a file in /dev/shm, mounted
# at $BENCH_WORK/rd; returns non-zero (nothing left behind) if it cannot.
RD_IMG="" RD_DEV="" RD_MNT=""
ramdisk_start() {
	[ "$(id -u)" = 0 ] && command -v losetup >/dev/null && command -v mkfs.ext4 >/dev/null ||
		return 1
	RD_IMG="/dev/shm/ringmail-bench-$$.img"
	truncate -s $((count * 8 / 1000 + 768))M "$RD_IMG" || { ramdisk_stop; return 1; }
	RD_DEV=$(losetup --find --show "$RD_IMG" 2>/dev/null) || { RD_DEV=""; ramdisk_stop; return 1; }
	RD_MNT="$BENCH_WORK/rd"
	mkdir -p "$RD_MNT"
	if ! mkfs.ext4 -q -F "$RD_DEV" >/dev/null 2>&1 || ! mount "$RD_DEV" "$RD_MNT"; then
		RD_MNT=""
		ramdisk_stop
		return 1
	fi
}

ramdisk_stop() {
	[ -n "$RD_MNT" ] && umount "$RD_MNT" 2>/dev/null
	[ -n "$RD_DEV" ] && losetup -d "$RD_DEV" 2>/dev/null
	[ -n "$RD_IMG" ] && rm -f "$RD_IMG"
	RD_IMG="" RD_DEV="" RD_MNT=""
}

# dsync_write_us DIR: mean microseconds of a 4 KiB O_DIRECT RWF_DSYNC
# overwrite (dd oflag=dsync) of a preallocated file in DIR, 400 writes.
dsync_write_us() {
	local f="$1/dsync.probe" t0 t1
	dd if=/dev/zero of="$f" bs=4k count=400 oflag=direct status=none 2>/dev/null || { echo null; return; }
	sync
	t0=$(now_ns)
	dd if=/dev/zero of="$f" bs=4k count=400 oflag=direct,dsync conv=notrunc status=none 2>/dev/null ||
		{ echo null; rm -f "$f"; return; }
	t1=$(now_ns)
	rm -f "$f"
	awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", (b - a) / 1000 / 400 }'
}

postfix_leg() {
	local port s c0 c1 held r
	port=$(bench_free_port)
	rm -rf pf
	pf_init "$BENCH_WORK/pf" "$port" || bench_die "pf_init failed"
	pf_route d1.test 127.0.0.2:9
	pf_set "smtpd_recipient_restrictions = check_client_access static:HOLD, permit_mynetworks, reject"
	pf_start || bench_die "private postfix did not start"
	bench_wait_port 127.0.0.1 "$port" || bench_die "postfix smtpd not listening"
	c0=$(pf_cpu_s)
	s=$(source_run "$port" "$pf_count")
	c1=$(pf_cpu_s)
	r=$(pf_pss_kb)
	held=$(find "$PF_QUEUE/hold" -type f | wc -l)
	PF_OK=$([ "$held" = "$pf_count" ] && echo true || echo false)
	[ "$PF_OK" = true ] || bench_log "postfix holds $held of $pf_count"
	pf_stop
	PF_RATE=$(bench_ratio "$pf_count" "$s")
	PF_CPU1K=$(awk -v a="$c0" -v b="$c1" -v n="$pf_count" 'BEGIN { printf "%.4f", (b - a) * 1000 / n }')
	PF_RSS_KB=$r
}

echo "inject: $count messages of $size bytes (postfix $pf_count), smtp-source -d -s $sessions, $shards shards, $(nproc) CPUs"
raw_leg
echo "raw (smtp-sink)          $RAW_RATE msgs/s"
ringmail_leg source || bench_die "ringmail did not start"
rm_rate=$RM_RATE rm_cpu=$RM_CPU1K rm_rss=$RM_RSS_KB rm_ok=$RM_OK
dsync_us=$(dsync_write_us "$BENCH_WORK")
rd_rate=null rd_ratio=null rd_ok=null
if ramdisk_start; then
	if BENCH_SPOOL_DIR="$RD_MNT/spool" ringmail_leg source; then
		rd_rate=$RM_RATE rd_ok=$RM_OK
		rd_ratio=$(bench_ratio "$rd_rate" "$RAW_RATE")
	fi
	ramdisk_stop
else
	bench_log "no RAM-backed loop device (needs root and losetup): leg skipped"
fi
echo "ringmail (smtp-source)   $rm_rate msgs/s, cpu $rm_cpu s/1k msgs, peak rss $rm_rss kB, checked $rm_ok"
ringmail_leg blast || bench_die "ringmail did not start"
echo "ringmail (blast -s $sessions)  $RM_RATE msgs/s, cpu $RM_CPU1K s/1k msgs, ack latency p50 $RM_P50_MS ms p99 $RM_P99_MS ms, checked $RM_OK"
postfix_leg
echo "postfix (hold queue)     $PF_RATE msgs/s, cpu $PF_CPU1K s/1k msgs, pss $PF_RSS_KB kB, checked $PF_OK"
ratio_raw=$(bench_ratio "$rm_rate" "$RAW_RATE")
ratio_pf=$(bench_ratio "$rm_rate" "$PF_RATE")
echo "ringmail (smtp-source), spool on a RAM-backed disk: $rd_rate msgs/s (ratio_vs_raw $rd_ratio, checked $rd_ok); disk: 4 KiB DSYNC write $dsync_us us"
echo "ratio_vs_raw $ratio_raw (target >= 0.8), ratio_vs_postfix $ratio_pf (target >= 15)"
echo "{\"bench\":\"inject\",\"count\":$count,\"postfix_count\":$pf_count,\"size\":$size,\"sessions\":$sessions,\"shards\":$shards,\"msgs_per_s\":$rm_rate,\"ratio_vs_raw\":$ratio_raw,\"ratio_vs_postfix\":$ratio_pf,\"p99_ack_ms\":$RM_P99_MS,\"legs\":{\"raw\":{\"msgs_per_s\":$RAW_RATE},\"ringmail\":{\"msgs_per_s\":$rm_rate,\"cpu_s_per_1k_msgs\":$rm_cpu,\"peak_rss_kb\":$rm_rss,\"complete\":$rm_ok},\"ringmail_blast\":{\"msgs_per_s\":$RM_RATE,\"p50_ack_ms\":$RM_P50_MS,\"p99_ack_ms\":$RM_P99_MS,\"cpu_s_per_1k_msgs\":$RM_CPU1K,\"peak_rss_kb\":$RM_RSS_KB,\"complete\":$RM_OK},\"ringmail_ramdisk\":{\"msgs_per_s\":$rd_rate,\"ratio_vs_raw\":$rd_ratio,\"complete\":$rd_ok},\"dsync_write_4k_us\":$dsync_us,\"postfix\":{\"msgs_per_s\":$PF_RATE,\"cpu_s_per_1k_msgs\":$PF_CPU1K,\"pss_kb\":$PF_RSS_KB,\"complete\":$PF_OK}}}"
