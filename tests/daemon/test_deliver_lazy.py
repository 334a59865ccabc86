#!/usr/bin/python3
"""test_deliver_lazy.py - recovered bodies are read back, not held (issue 3,
LOAD-03: "the active set in memory stays within its cap").

1. Bodies read back under a small budget: 600 messages of ~40 KB (24 MB of
   bodies) pre-loaded with `ringmail-spool load` into shard 0 only, the
   daemon run with 2 shards and memory_budget = 16M (8 MB per shard: not
   all bodies fit, and the domains shard 1 owns are read from shard 0's
   spool through the mailbox). Every message is delivered to rec_sink.py
   exactly once and byte-identical to `ringmail-spool show` of its record;
   the spool ends with no live recipient.
2. RSS: the daemon (hold = yes) on an empty spool, then on 50,000
   messages of 5 KB (250 MB of bodies) pre-loaded: once it listens
   (recovery done, every recipient queued), the backlog adds less than a
   third of its body bytes to VmRSS. A daemon that copies bodies at
   start-up adds all of them and fails this.
3. Read-ahead per destination: the same backlog delivered, 2 connections
   a domain, to ringmail-sink answering 50 ms late: the peak RSS (VmHWM)
   after 10,000 are sent is less than a fifth of the body bytes above the
   held daemon's. Read-ahead in heap order up to the budget fails this.
4. A dead destination: 3,000 messages for a closed port; the first refused
   connection defers at least 90% of them at once (parked jobs too, without
   reading them), each once.
(Read errors, a record corrupted on disk after recovery: test_quarantine.py.)

Usage: test_deliver_lazy.py BUILD_ROOT
"""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from daemon_tap import (Daemon, _children, build_root, diag, done, message_id_of,  # noqa: E402
                        ok, read_jsonl, wait_for)

root = build_root()
here = os.path.dirname(os.path.abspath(__file__))
spool_tool = os.path.join(root, "tools", "ringmail-spool")


def load(spool, *args):
    r = subprocess.run([spool_tool, "-d", spool, "load"] + list(args), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=900)
    if r.returncode != 0:
        diag(r.stderr.decode(errors="replace"))
    return r.returncode == 0


# ---- 1. a small budget, cross-shard reads, exact bodies ----
COUNT = 600
d = Daemon(root, "dlazy", engine_extra="memory_budget = 16M\n")
ok(load(d.spool, "--shards", "1", "--count", str(COUNT), "--size", "40000", "--domains", "4",
        "--seed", "7"), "ringmail-spool load: %d messages of 40 KB into shard 0" % COUNT)
listing = d.spool_ls()
ok(len(listing) == COUNT, "the spool lists %d messages" % len(listing))
expected = {}
for qid in listing:
    js = d.spool_show(qid)
    if js is None:
        break
    text = js["headers"] + "\r\n" + js["body"]
    expected[message_id_of(text)] = text
ok(len(expected) == COUNT, "%d distinct messages read back with ringmail-spool show"
   % len(expected))

record = os.path.join(d.dir, "sink.jsonl")
sink = subprocess.Popen(["/usr/bin/python3", os.path.join(here, "rec_sink.py"), "--port",
                         str(d.sink_port), "--record", record, "--stats",
                         os.path.join(d.dir, "sink.stats")],
                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
_children.append(sink)
ok(sink.stdout.readline().startswith(b"listening"), "rec_sink listens")
with open(d.conf) as f:
    conf = f.read().replace("hold = yes\n", "")
with open(d.conf, "w") as f:
    f.write(conf)
started = d.start(timeout=180) and bool(d.wait_line(r"ringmail: started", 60))
ok(started, "the daemon starts with memory_budget = 16M and 2 shards")
wait_for(lambda: len(read_jsonl(record)) >= COUNT, 600, 0.2)
ok(d.stop(), "it stops with exit 0")
got = read_jsonl(record)
ids = [message_id_of(r["body"]) for r in got]
ok(len(got) == COUNT and len(set(ids)) == COUNT,
   "every message delivered exactly once (%d records, %d distinct)" % (len(got), len(set(ids))))
bad = [i for r, i in zip(got, ids) if expected.get(i) != r["body"]]
ok(not bad and len(got) > 0, "every body is byte-identical to its spool record")
if bad:
    diag("first mismatch: %s" % bad[0])
left = d.spool_ls()
live = [q for q, m in left.items()
        if any(r.get("state") not in ("delivered",) for r in m.get("recipients", []))]
ok(not live, "no live recipient left in the spool (%d)" % len(live))
sink.terminate()
sink.wait(timeout=30)

# ---- 2. RSS after start-up with a 50k x 5 KB backlog ----
BIG, SIZE = 50000, 5120


def rss_kb(daemon):
    if daemon.proc is None:
        return None
    with open("/proc/%d/status" % daemon.proc.pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


# The fixed part first (pools, rings, buffers): the same daemon on an
# empty spool; the backlog's cost is what the 50k messages add to it.
r = Daemon(root, "drss", segment_size="64M")
ok(r.start(timeout=180), "the daemon starts on an empty spool (hold = yes)")
empty_kb = rss_kb(r)
ok(r.stop(timeout=180), "and stops")
ok(load(r.spool, "--shards", "2", "--count", str(BIG), "--size", str(SIZE), "--domains", "100",
        "--seed", "3"), "ringmail-spool load: %d messages of %d bytes" % (BIG, SIZE))
ok(r.start(timeout=300) and bool(r.wait_line(r"recovered %d messages" % BIG, 60)),
   "the daemon recovers the backlog and listens (hold = yes)")
full_kb = rss_kb(r)
body_kb = BIG * SIZE // 1024
diag("VmRSS %s kB on an empty spool, %s kB with the backlog; bodies %d kB"
     % (empty_kb, full_kb, body_kb))
# Eager copies add at least body_kb; envelopes and jobs cost about 0.5 KB
# a message.
ok(empty_kb is not None and full_kb is not None and full_kb - empty_kb < body_kb // 3,
   "the backlog adds %s kB of RSS, under a third of its %d kB of bodies"
   % (None if full_kb is None or empty_kb is None else full_kb - empty_kb, body_kb))
ok(r.stop(timeout=180), "it stops with exit 0")

# ---- 3. read-ahead per destination while the backlog is delivered ----
# The same 50k backlog (100 domains), now delivered with 2 connections per
# domain to ringmail-sink answering each batch 50 ms late: bodies are read
# back far faster than they leave. Read-ahead is bounded per destination
# (a few bodies per connection, docs/engine.md), so the peak RSS stays
# near the held daemon's of part 2; read-ahead in heap order up to the
# memory budget (1G) would read most of the 250 MB before 10,000 are sent.
SENT = 10000
stats = os.path.join(r.dir, "sink3.stats")
sink3 = subprocess.Popen([os.path.join(root, "bench", "ringmail-sink"), "-l",
                          "127.0.0.1:%d" % r.sink_port, "--delay-ms", "50", "--stats", stats,
                          "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
_children.append(sink3)
with open(r.conf) as f:
    conf = f.read().replace("hold = yes\n", "")
with open(r.conf, "w") as f:
    f.write(conf + "\n[destination]\nmax_connections = 2\n")


def sink_messages():
    try:
        with open(stats) as f:
            return json.load(f).get("messages", 0)
    except (OSError, ValueError):
        return 0


def hwm_kb(daemon):
    with open("/proc/%d/status" % daemon.proc.pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return None


# Under AddressSanitizer, freed bodies wait in its quarantine (256 MB by
# default) instead of being reused: the peak would measure that.
os.environ["ASAN_OPTIONS"] = (os.environ.get("ASAN_OPTIONS", "") + ":quarantine_size_mb=4").lstrip(":")
ok(r.start(timeout=300), "the daemon starts delivering the backlog (2 connections a domain)")
ok(wait_for(lambda: sink_messages() >= SENT, 300, 0.1), "the sink has %d messages" % SENT)
peak_kb = hwm_kb(r)
diag("VmHWM %s kB after %d sent; held daemon %s kB; bodies %d kB"
     % (peak_kb, SENT, full_kb, body_kb))
ok(peak_kb is not None and full_kb is not None and peak_kb - full_kb < body_kb // 5,
   "read-ahead adds %s kB at its peak, under a fifth of the %d kB of bodies"
   % (None if peak_kb is None or full_kb is None else peak_kb - full_kb, body_kb))
ok(r.stop(timeout=180), "it stops with exit 0")
sink3.terminate()
sink3.wait(timeout=30)
r.cleanup()

# ---- 4. a dead destination defers its whole backlog at once ----
# 3,000 messages for one domain routed to a closed port. Only a few bodies
# are read ahead (no connection yet); the rest wait parked. The refused
# connection defers the queued jobs and, with the same status and without
# reading them, the parked ones: nearly every recipient is deferred at the
# first failure (those whose read was still out wait in the queue for the
# next attempt, as they would without parking), not a window's worth per
# backed-off attempt (30 s apart).
DEAD = 3000
z = Daemon(root, "ddead")
with open(z.conf) as f:
    conf = f.read().replace("hold = yes\n", "")
with open(z.conf, "w") as f:
    f.write(conf)
ok(load(z.spool, "--shards", "2", "--count", str(DEAD), "--size", "1000", "--domains", "1",
        "--seed", "5"), "ringmail-spool load: %d messages for one domain" % DEAD)
zlog = os.path.join(z.dir, "delivery.log")


def deferred():
    return [e for e in read_jsonl(zlog) if e.get("type") == "TransientFailure"]


ok(z.start(timeout=180), "the daemon starts with the destination's port closed")
wait_for(lambda: len(deferred()) >= DEAD * 9 // 10, 20, 0.1)
got = deferred()
ok(len(got) >= DEAD * 9 // 10 and len({e.get("queue_id") for e in got}) == len(got),
   "%d of %d recipients deferred within 20 s (at least 90%%), once each"
   % (len(got), DEAD))
ok(all(e.get("code") == 451 for e in got), "each with the connection's 451")
ok(z.stop(timeout=180), "it stops with exit 0")
z.cleanup()

done()
