#!/usr/bin/env bash
# bench-targets: engine/ringmail bench/ringmail-sink bench/ringmail-blast
# ./bench/run soak [--quick] - hold load for a long time, watch for leaks (issue 6).
#
# ringmail-blast -> ringmail -> ringmail-sink, at a steady RATE msgs/s
# (default 1000; RINGMAIL_BENCH_SOAK_RATE) for 10 minutes (--quick: 1
# minute; RINGMAIL_BENCH_SOAK_SECONDS overrides), 2 KB messages over 20
# domains on 16 pipelined sessions. The daemon's resident memory (VmRSS)
# and open descriptors (/proc/PID/fd) are sampled every 5 s
# (RINGMAIL_BENCH_SOAK_EVERY) into soak-samples.tsv:
#   start  after start-up, before any load;
#   warm   the first sample after the warm-up (a fifth of the run), once
#          the pools and caches have reached their working size;
#   end    the last sample under load;
#   idle   after the queue drained and idle connections closed
#          (fds_end), each descriptor classified (fds-start.txt,
#          fds-end.txt: sockets, spool segment files, deleted files, other).
# Flat after warm-up: rss_end_kb - rss_warm_kb <= max(5% of rss_warm_kb,
# 4 MiB) (the least-squares slope after warm-up is reported too); at idle
# no more sockets and no more non-segment descriptors than at the start,
# no descriptor of a deleted file, and segment descriptors within the
# spool's pool bound (per log: active + 2 ready + 1 + 4 spares = 8; two
# logs per shard). Exactly once (as tools/demo): every message blast got a
# 250 for reached the sink once (lost, duplicates, unexpected).
#
# BENCH_KEEP=1 keeps the work directory (samples, logs, ids).
# Last stdout line: one JSON object (rss_start_kb, rss_end_kb, rss_max_kb,
# fds_start, fds_end, msgs, lost, duplicates, flat, ...). Exit 0 only when
# the run is flat and exactly once.
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

seconds=600
for arg in "$@"; do
	case "$arg" in
	--quick) seconds=60 ;;
	-h | --help)
		sed -n '3,25p' "$0" | sed 's/^# \{0,1\}//' >&2
		exit 0
		;;
	*) bench_die "soak: unknown argument '$arg'" ;;
	esac
done
seconds="${RINGMAIL_BENCH_SOAK_SECONDS:-$seconds}"
rate="${RINGMAIL_BENCH_SOAK_RATE:-1000}"
every="${RINGMAIL_BENCH_SOAK_EVERY:-5}"
sessions=16
domains=20
size=2048
msgs=$((rate * seconds))
sink_bin="$BUILD_DIR/bench/ringmail-sink"
blast_bin="$BUILD_DIR/bench/ringmail-blast"
for b in "$BUILD_DIR/engine/ringmail" "$sink_bin" "$blast_bin"; do
	[ -x "$b" ] || bench_die "$b missing: build first (./bench/run builds it)"
done

trap 'bench_cleanup' EXIT
trap 'exit 130' INT TERM
bench_enter_work

rss_kb() { awk '/^VmRSS:/ { print $2; f = 1 } END { if (!f) print 0 }' "/proc/$1/status" 2>/dev/null || echo 0; }
fd_count() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }
# What each descriptor is: socket/pipe/anon inode kinds, files by folder
# with segment names generalised, and "(deleted)" kept (a leak signature).
fd_list() {
	local f
	for f in "/proc/$1/fd"/*; do readlink "$f" 2>/dev/null; done |
		sed -e 's/:\[[0-9]*\]$//' -e 's#/[0-9a-f]\{16\}\.\(seg\|ready\|prep\)#/SEGMENT.\1#' | sort | uniq -c
}
sock_count() {
	local f n=0
	for f in "/proc/$1/fd"/*; do
		case "$(readlink "$f" 2>/dev/null)" in socket:*) n=$((n + 1)) ;; esac
	done
	echo "$n"
}
lines_of() { if [ -f "$1" ]; then wc -l <"$1"; else echo 0; fi; }

# ---- sink and daemon ----
sink_port=$(bench_free_port)
"$sink_bin" -l "127.0.0.1:$sink_port" --threads 1 --json sink.json --log-ids sink.ids \
	--quiet 2>>sink.err &
SINK_PID=$!
bench_track "$SINK_PID"
bench_wait_port 127.0.0.1 "$sink_port" || bench_die "ringmail-sink did not start: $(tail -1 sink.err)"

rm_port=$(bench_free_port)
while [ "$rm_port" = "$sink_port" ]; do rm_port=$(bench_free_port); done
shards=$(nproc)
[ "$shards" -gt 4 ] && shards=4
bench_rm_config "$rm_port" "$shards" >ringmail.conf <<EOF

[route soak]
domains = *
hosts = 127.0.0.1:$sink_port
EOF
bench_rm_start ringmail.conf "$rm_port" || exit 1

# The baseline, before any load, once start-up has settled: every shard
# listening and its first segments prepared (the descriptor count the same
# for 3 s in a row; bounded, 60 s).
prev=-1 same=0
for _ in $(seq 1 60); do
	cur=$(fd_count "$RM_PID")
	if [ "$cur" = "$prev" ]; then same=$((same + 1)); else same=0; fi
	[ "$same" -ge 3 ] && break
	prev=$cur
	sleep 1
done
rss_start=$(rss_kb "$RM_PID")
fds_start=$(fd_count "$RM_PID")
fd_list "$RM_PID" >fds-start.txt
socks_start=$(sock_count "$RM_PID")
bench_log "soak: ringmail pid $RM_PID, $shards shards; $msgs messages at $rate/s for ${seconds}s;" \
	"start: rss ${rss_start} kB, fds $fds_start"

# ---- load ----
t0=$(now_ns)
"$blast_bin" -c "127.0.0.1:$rm_port" -s "$sessions" -m "$msgs" --rate "$rate" --size "$size" \
	--domains "$domains" --domain-fmt 'd%u.soak.test' --log-ids blast.ids --json blast.json \
	--quiet 2>>blast.err &
BLAST_PID=$!
bench_track "$BLAST_PID"

printf 't_s\trss_kb\tfds\tacked\tdelivered\n' >soak-samples.tsv
sample() {
	local t
	t=$(bench_seconds "$t0" "$(now_ns)")
	printf '%s\t%s\t%s\t%s\t%s\n' "$t" "$(rss_kb "$RM_PID")" "$(fd_count "$RM_PID")" \
		"$(lines_of blast.ids)" "$(lines_of sink.ids)" >>soak-samples.tsv
}
died=false
# Bounded: the plan takes $seconds at $rate; allow twice that plus 2 min.
limit=$(((2 * seconds + 120) / every + 1))
for _ in $(seq 1 "$limit"); do
	kill -0 "$BLAST_PID" 2>/dev/null || break
	kill -0 "$RM_PID" 2>/dev/null || { died=true; break; }
	sample
	sleep "$every"
done
if kill -0 "$BLAST_PID" 2>/dev/null; then
	bench_log "soak: blast still running after the time limit: stopping it"
	kill -TERM "$BLAST_PID" 2>/dev/null
fi
wait "$BLAST_PID" 2>/dev/null
blast_rc=$?
t_load=$(bench_seconds "$t0" "$(now_ns)")
kill -0 "$RM_PID" 2>/dev/null || died=true
$died || sample
end_line=$(tail -n 1 soak-samples.tsv)

# ---- drain: every acknowledged message at the sink (bounded, 3 min) ----
acked=$(lines_of blast.ids)
for _ in $(seq 1 360); do
	[ "$(lines_of sink.ids)" -ge "$acked" ] && break
	kill -0 "$RM_PID" 2>/dev/null || { died=true; break; }
	sleep 0.5
done
# Idle: the delivery connections close after idle_timeout (5 s); wait
# (bounded, 60 s) for the socket count to come back to the start's.
for _ in $(seq 1 120); do
	[ "$(sock_count "$RM_PID")" -le "$socks_start" ] && break
	kill -0 "$RM_PID" 2>/dev/null || { died=true; break; }
	sleep 0.5
done
fds_end=$(fd_count "$RM_PID")
fd_list "$RM_PID" >fds-end.txt
rss_idle=$(rss_kb "$RM_PID")
peak_hwm=$(bench_peak_rss_kb "$RM_PID")
daemon_cpu=$(bench_cpu_s "$RM_PID")
bench_stop_tracked
load=$(cut -d' ' -f1-3 /proc/loadavg)

python3 - "$seconds" "$rate" "$msgs" "$blast_rc" "$died" "$rss_start" "$fds_start" \
	"$end_line" "$fds_end" "$rss_idle" "$peak_hwm" "$daemon_cpu" "$t_load" "$load" \
	"$shards" "$BENCH_WORK" <<'EOF'
import json, sys
(seconds, rate, msgs, blast_rc, died, rss_start, fds_start, end_line, fds_end, rss_idle,
 peak_hwm, cpu, t_load, load, shards, work) = sys.argv[1:]
seconds, rate, msgs = int(seconds), int(rate), int(msgs)
rows = []
with open("soak-samples.tsv") as f:
    next(f)
    for line in f:
        t, rss, fds, acked, deliv = line.split("\t")
        rows.append((float(t), int(rss), int(fds)))
warm_t = seconds / 5.0
post = [r for r in rows if r[0] >= warm_t] or rows[-1:]
rss_warm, fds_warm = post[0][1], post[0][2]
rss_end, fds_load_end = int(end_line.split("\t")[1]), int(end_line.split("\t")[2])
slope = 0.0
if len(post) >= 3:
    n = len(post)
    mt = sum(r[0] for r in post) / n
    mr = sum(r[1] for r in post) / n
    var = sum((r[0] - mt) ** 2 for r in post)
    slope = sum((r[0] - mt) * (r[1] - mr) for r in post) / var * 60.0 if var > 0 else 0.0

def ids(path, last):
    out = []
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if parts:
                    out.append(parts[-1] if last else parts[0])
    except OSError:
        pass
    return out
acked = ids("blast.ids", True)      # "QUEUEID RUNID-n"
received = ids("sink.ids", True)    # "RUNID-n"
acc, rec = set(acked), set(received)
lost = len(acc - rec)
dups = len(received) - len(rec)
extra = len(rec - acc)
try:
    blast = json.load(open("blast.json"))
except (OSError, ValueError):
    blast = {}
def fd_kinds(path):
    """{socket, segment, deleted, other} counts of an fd_list file."""
    kinds = {"socket": 0, "segment": 0, "deleted": 0, "other": 0}
    try:
        with open(path) as f:
            for line in f:
                n, what = line.strip().split(None, 1)
                kind = ("deleted" if "(deleted)" in what else "socket" if what == "socket"
                        else "segment" if "/SEGMENT." in what else "other")
                kinds[kind] += int(n)
    except (OSError, ValueError):
        pass
    return kinds
k0, k1 = fd_kinds("fds-start.txt"), fd_kinds("fds-end.txt")
growth = rss_end - rss_warm
flat_rss = growth <= max(rss_warm * 0.05, 4096)
flat_fds = (k1["socket"] <= k0["socket"] and k1["other"] <= k0["other"] and k1["deleted"] == 0
            and k1["segment"] <= 16 * int(shards))
exactly_once = lost == 0 and dups == 0 and extra == 0 and died == "false"
out = {
    "bench": "soak", "seconds": seconds, "rate": rate, "shards": int(shards),
    "msgs": len(acked), "planned": msgs, "failed": msgs - len(acked),
    "delivered": len(received), "lost": lost, "duplicates": dups, "unexpected": extra,
    "rss_start_kb": int(rss_start), "rss_warm_kb": rss_warm, "rss_end_kb": rss_end,
    "rss_max_kb": max([r[1] for r in rows] + [int(rss_start)]), "rss_idle_kb": int(rss_idle),
    "vm_hwm_kb": int(peak_hwm), "rss_slope_kb_per_min": round(slope, 1),
    "fds_start": int(fds_start), "fds_warm": fds_warm, "fds_load_end": fds_load_end,
    "fds_max": max(r[2] for r in rows) if rows else 0, "fds_end": int(fds_end),
    "fd_kinds_start": k0, "fd_kinds_end": k1, "samples": len(rows), "load_s": float(t_load), "daemon_cpu_s": float(cpu),
    "inject_p99_us": blast.get("p99_latency_us", 0), "blast_exit": int(blast_rc),
    "daemon_died": died == "true", "loadavg_end": load,
    "flat": bool(flat_rss and flat_fds), "exactly_once": exactly_once,
}
print("soak: %d msgs at %d/s over %.0f s; rss start %d warm %d end %d max %d kB (slope %.1f "
      "kB/min after warm-up); fds start %d end %d; lost %d duplicates %d; %s, %s"
      % (len(acked), rate, float(t_load), int(rss_start), rss_warm, rss_end, out["rss_max_kb"],
         slope, int(fds_start), int(fds_end), lost, dups, "flat" if out["flat"] else "NOT FLAT",
         "exactly once" if exactly_once else "NOT exactly once"), file=sys.stderr)
print(json.dumps(out))
sys.exit(0 if out["flat"] and exactly_once else 1)
EOF
