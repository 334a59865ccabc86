#!/usr/bin/python3
"""e2e_charts.py JSON OUTDIR - PNG charts of one ./bench/run e2e result.

JSON is a file whose last line is the benchmark's JSON object (the whole
stdout of ./bench/run e2e will do). Writes into OUTDIR:

  e2e-throughput.png   delivered msgs/s per workload: raw, Postfix, ringmail
                       (log scale: Postfix is two orders of magnitude down)
  e2e-cpu.png          CPU seconds per 1000 messages, Postfix and ringmail
  e2e-latency.png      p99 injection latency (final dot to 250), ms
  e2e.dat              the numbers the charts were drawn from

Draws with gnuplot (package gnuplot-nox, pngcairo terminal). A leg that did
not run, or did not complete, is drawn as missing, never as zero. Exit 1
with one line on stderr when the input has no e2e object or gnuplot fails.
"""
import json
import math
import os
import subprocess
import sys

SYSTEMS = ("raw", "postfix", "ringmail")
LABELS = {"raw": "raw one hop (smtp-source -d)", "postfix": "Postfix", "ringmail": "ringmail"}


def load(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = [ln for ln in f.read().splitlines() if ln.strip()]
    for line in reversed(lines):
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict) and obj.get("bench") == "e2e":
            return obj
    raise ValueError("no e2e JSON object in " + path)


def value(leg, key):
    """A number from a completed leg, or None (drawn as missing)."""
    if not isinstance(leg, dict) or not leg.get("complete", False):
        return None
    v = leg.get(key)
    return v if isinstance(v, (int, float)) and v > 0 else None


def table(result):
    rows = []
    for name in sorted(result.get("workloads", {})):
        w = result["workloads"][name]
        row = {"workload": name}
        for sys_name in SYSTEMS:
            leg = w.get(sys_name)
            row[sys_name] = {
                "rate": value(leg, "msgs_per_s"),
                "cpu": value(leg, "cpu_s_per_1k_msgs"),
                "p99": value(leg, "p99_inject_ms"),
            }
        rows.append(row)
    if not rows:
        raise ValueError("the e2e object has no workloads")
    return rows


def fmt(v):
    return "NaN" if v is None else "%g" % v


def write_dat(rows, path):
    with open(path, "w", encoding="ascii") as f:
        f.write("# workload raw_msgs_s postfix_msgs_s ringmail_msgs_s "
                "postfix_cpu_s_1k ringmail_cpu_s_1k postfix_p99_ms ringmail_p99_ms\n")
        for r in rows:
            cols = [r["raw"]["rate"], r["postfix"]["rate"], r["ringmail"]["rate"],
                    r["postfix"]["cpu"], r["ringmail"]["cpu"],
                    r["postfix"]["p99"], r["ringmail"]["p99"]]
            f.write(r["workload"] + " " + " ".join(fmt(c) for c in cols) + "\n")


def log_range(values):
    """A log-scale y range with a decade of room under the smallest bar."""
    vals = [v for v in values if v is not None]
    if not vals:
        return "[1:10]"
    lo = 10 ** (math.floor(math.log10(min(vals))) - 1)
    hi = 10 ** (math.ceil(math.log10(max(vals))) + 0.3)
    return "[%g:%g]" % (lo, hi)


def gnuplot_script(dat, outdir, subtitle, rows):
    def col(sys_names, key):
        return log_range([r[s][key] for r in rows for s in sys_names])
    common = f"""
set terminal pngcairo size 900,520 font "sans,11"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set grid ytics
set key outside bottom center horizontal
set datafile missing "NaN"
set xtics nomirror
"""
    return common + f"""
set output "{outdir}/e2e-throughput.png"
set title "Delivered messages per second, first injection to last delivery\\n{{/*0.8 {subtitle}}}"
set logscale y
set yrange {col(SYSTEMS, "rate")}
set ylabel "msgs/s (log scale)"
plot "{dat}" using 2:xtic(1) title "{LABELS['raw']}" lc rgb "#999999", \\
     "" using 3 title "{LABELS['postfix']}" lc rgb "#d95f02", \\
     "" using 4 title "{LABELS['ringmail']}" lc rgb "#1b9e77"

set output "{outdir}/e2e-cpu.png"
set title "CPU seconds per 1000 messages (lower is better)\\n{{/*0.8 {subtitle}}}"
set yrange {col(("postfix", "ringmail"), "cpu")}
set ylabel "CPU s / 1k msgs (log scale)"
plot "{dat}" using 5:xtic(1) title "{LABELS['postfix']}" lc rgb "#d95f02", \\
     "" using 6 title "{LABELS['ringmail']}" lc rgb "#1b9e77"

set output "{outdir}/e2e-latency.png"
set title "p99 injection latency, final dot to 250 (lower is better)\\n{{/*0.8 {subtitle}}}"
set yrange {col(("postfix", "ringmail"), "p99")}
set ylabel "ms (log scale)"
plot "{dat}" using 7:xtic(1) title "{LABELS['postfix']}" lc rgb "#d95f02", \\
     "" using 8 title "{LABELS['ringmail']}" lc rgb "#1b9e77"
"""


def main(argv):
    if len(argv) != 3:
        sys.stderr.write("usage: e2e_charts.py JSON OUTDIR\n")
        return 64
    try:
        result = load(argv[1])
        rows = table(result)
    except (OSError, ValueError) as e:
        sys.stderr.write("e2e_charts.py: %s\n" % e)
        return 1
    outdir = os.path.abspath(argv[2])
    os.makedirs(outdir, exist_ok=True)
    dat = os.path.join(outdir, "e2e.dat")
    write_dat(rows, dat)
    subtitle = "%s run, %s messages per workload, %s CPUs, %s shards" % (
        "--quick" if result.get("quick") else "full", result.get("count", "?"),
        result.get("cpus", "?"), result.get("shards", "?"))
    try:
        proc = subprocess.run(["gnuplot"], input=gnuplot_script(dat, outdir, subtitle, rows),
                              text=True, capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        sys.stderr.write("e2e_charts.py: gnuplot: %s (install gnuplot-nox)\n" % e)
        return 1
    if proc.returncode != 0:
        sys.stderr.write("e2e_charts.py: gnuplot failed: %s\n" % proc.stderr.strip()[:300])
        return 1
    for name in ("e2e-throughput.png", "e2e-cpu.png", "e2e-latency.png"):
        print(os.path.join(outdir, name))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
