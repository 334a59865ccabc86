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
(Read errors, a record corrupted on disk after recovery: test_quarantine.py.)

Usage: test_deliver_lazy.py BUILD_ROOT
"""
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
r.cleanup()

done()
