#!/usr/bin/env bash
# measure_recovery.sh - how long recovery takes and how much memory it
# needs, on a pre-loaded spool (a measurement, not a test: it asserts
# nothing and is not registered with meson).
#
#   tests/spool/measure_recovery.sh [BUILD_DIR] [COUNT] [SIZE]
#
# Loads COUNT messages of about SIZE bytes (default 20000 x 5120) into one
# shard with BUILD_DIR/tools/ringmail-spool load, then times, with
# /usr/bin/time -v (wall clock and peak RSS):
#   - `ringmail-spool stats`, three runs (the first after dropping the page
#     cache when that is permitted: segments are written with O_DIRECT, so
#     they are not in the cache anyway);
#   - the daemon (BUILD_DIR/engine/ringmail, one shard, nothing routable)
#     from exec to its "ringmail: started" line, two runs: the second
#     start recovers the spool the first one left (its ready segments).
# Scratch space lives under BUILD_DIR (a disk, not tmpfs) and is removed
# at the end.
set -euo pipefail

build="${1:-build}"
count="${2:-20000}"
size="${3:-5120}"
tool="$build/tools/ringmail-spool"
daemon="$build/engine/ringmail"
[ -x "$tool" ] || { echo "measure_recovery: no $tool (build first)" >&2; exit 1; }

work="$(mktemp -d "$(cd "$build" && pwd)/measure-recovery.XXXXXX")"
dpid=""
cleanup() {
	if [ -n "$dpid" ]; then kill -TERM "$dpid" 2>/dev/null || true; wait "$dpid" 2>/dev/null || true; fi
	rm -rf "$work"
}
trap cleanup EXIT

drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true; }

# "wall_s rss_kb" from a /usr/bin/time -v report.
time_fields() {
	awk -F': ' '/Elapsed \(wall clock\)/ { n = split($2, t, ":"); s = 0;
			for (i = 1; i <= n; i++) s = s * 60 + t[i]; wall = s }
		/Maximum resident set size/ { rss = $2 }
		END { printf "%.3f s, %d KB max RSS", wall, rss }' "$1"
}

echo "# load: $tool -d $work/spool load --shards 1 --count $count --size $size"
"$tool" -d "$work/spool" --json load --shards 1 --count "$count" --size "$size" >"$work/load.json"
echo "# spool files: $(ls "$work/spool/0/msg" | tr '\n' ' ')"
du -sh "$work/spool" | sed 's/^/# du: /'

for run in 1 2 3; do
	[ "$run" -eq 1 ] && drop_caches
	/usr/bin/time -v "$tool" -d "$work/spool" --json stats >"$work/stats.json" 2>"$work/time.txt"
	echo "stats run $run: $(time_fields "$work/time.txt")"
done
echo "# stats: $(head -c 600 "$work/stats.json")"

[ -x "$daemon" ] || { echo "# no $daemon: daemon start not measured"; exit 0; }
cat >"$work/ringmail.conf" <<EOF
[engine]
shards = 1
spool_dir = $work/spool
delivery_log = $work/delivery.log
dns_servers = 127.0.0.1
free_space_reserve = 64M
EOF
for run in 1 2; do
	drop_caches
	start_ns=$(date +%s%N)
	coproc RM { exec /usr/bin/time -v -o "$work/dtime.txt" "$daemon" -c "$work/ringmail.conf" 2>&1; }
	dpid=$RM_PID
	exec {out}<&"${RM[0]}"
	line=""
	while IFS= read -r -t 120 -u "$out" l; do
		case "$l" in *"ringmail: started"*) line="$l"; break ;; esac
	done
	end_ns=$(date +%s%N)
	# Stop the daemon itself (time's child): time then writes its report.
	child="$(pgrep -P "$dpid" || true)"
	kill -TERM "${child:-$dpid}" 2>/dev/null || true
	while IFS= read -r -t 60 -u "$out" l; do :; done
	wait "$dpid" 2>/dev/null || true
	dpid=""
	echo "daemon run $run: exec to started $(( (end_ns - start_ns) / 1000000 )) ms," \
		"$(time_fields "$work/dtime.txt") (whole run)"
	echo "#   $line"
	echo "#   files: $(ls "$work/spool/0/msg" | tr '\n' ' ')"
done
