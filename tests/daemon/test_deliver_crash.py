#!/usr/bin/python3
"""test_deliver_crash.py - KRN-01: kill -9 while injecting AND delivering.

One ringmail-sink stays up for the whole test and logs the X-Blast-Id of
every message it receives. Each round starts the daemon on the same spool
(every domain routed to the sink), runs ringmail-blast against it (paced,
each acknowledged id appended to a ledger file with one write per 250),
kills the daemon with SIGKILL at a random moment, then stops blast. After
the last round the daemon is started once more and left to deliver.

Pass: every id blast got a 250 for reaches the sink (0 lost); duplicates
are counted and bounded by the transactions that can be in flight at a
kill (delivery connections to the sink, one message each); the sink saw
no id that no blast run sent; the daemon recovers and stops with exit 0.

RINGMAIL_CRASH_ROUNDS (default 20) and RINGMAIL_CRASH_SEED change the run;
the seed is printed so a failure can be replayed.
Usage: test_deliver_crash.py BUILD_ROOT
"""
import os
import random
import re
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from daemon_tap import Daemon, build_root, diag, done, free_port, ok, wait_for, wait_port  # noqa: E402

rounds = int(os.environ.get("RINGMAIL_CRASH_ROUNDS", "20"))
seed = int(os.environ.get("RINGMAIL_CRASH_SEED", str(random.SystemRandom().randrange(1 << 32))))
diag("seed %d (RINGMAIL_CRASH_SEED=%d to replay), %d rounds" % (seed, seed, rounds))
rng = random.Random(seed)

DOMAINS = 5
CONNS_PER_DOMAIN = 4  # so at most DOMAINS * CONNS_PER_DOMAIN transactions in flight

root = build_root()
sink_bin = os.path.join(root, "bench", "ringmail-sink")
blast_bin = os.path.join(root, "bench", "ringmail-blast")
d = Daemon(root, "dcrash", listeners={"main": "message_size_limit = 64k\nrecipients_max = 10\n"},
           segment_size="4M")
sink_port = free_port()
sink_ids = os.path.join(d.dir, "sink.ids")
ledger = os.path.join(d.dir, "acked.ids")

# The daemon's config: deliver (no hold) to the sink, retry at once.
with open(d.conf) as f:
    text = f.read()
text = text.replace("hold = yes\n", "")
text = text.replace("retry_schedule = 1h", "retry_schedule = 1s")
text = re.sub(r"hosts = 127\.0\.0\.1:\d+", "hosts = 127.0.0.1:%d" % sink_port, text)
text += "\n[destination]\nmax_connections = %d\n" % CONNS_PER_DOMAIN
with open(d.conf, "w") as f:
    f.write(text)

sink = subprocess.Popen([sink_bin, "-l", "127.0.0.1:%d" % sink_port, "--log-ids", sink_ids,
                         "--json", os.path.join(d.dir, "sink.json"), "--quiet"],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
ok(wait_port("127.0.0.1", sink_port, 30), "ringmail-sink listens")


def read_ids(path, column):
    out = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) > column:
                    out.append(parts[column])
    return out


killed = 0
for r in range(rounds):
    if not d.start(timeout=120):
        ok(False, "round %d: the daemon starts on the crashed spool" % r)
        break
    blast = subprocess.Popen([blast_bin, "-c", "127.0.0.1:%d" % d.ports["main"], "-s", "4",
                              "-m", "1000000", "--rate", "800", "--size", "1500",
                              "--domains", str(DOMAINS), "--domain-fmt", "d%u.crash.test",
                              "--run-id", "r%d" % r, "--log-ids", ledger, "--quiet",
                              "--timeout", "5"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(rng.uniform(0.3, 1.5))
    d.kill9()
    killed += 1
    blast.send_signal(signal.SIGTERM)
    try:
        blast.wait(timeout=60)
    except subprocess.TimeoutExpired:
        blast.kill()
        blast.wait()

ok(killed == rounds, "%d kill -9 rounds while injecting and delivering" % killed)
acked = read_ids(ledger, 1)
ok(len(acked) > 0, "messages were acknowledged (%d)" % len(acked))

ok(d.start(timeout=120), "the daemon recovers the spool after %d crashes" % rounds)
acked_set = set(acked)
delivered_all = wait_for(lambda: acked_set <= set(read_ids(sink_ids, 0)), 180, 0.2)
ok(d.stop(), "and stops with exit 0 once everything is delivered")
sink.send_signal(signal.SIGTERM)
sink.wait(timeout=60)

received = read_ids(sink_ids, 0)
received_set = set(received)
missing = sorted(acked_set - received_set)
ok(delivered_all and not missing, "every acknowledged message reached the sink (%d acked, "
   "%d received)" % (len(acked_set), len(received)))
if missing:
    diag("missing %d, e.g. %s" % (len(missing), missing[:5]))
dups = len(received) - len(received_set)
bound = killed * DOMAINS * CONNS_PER_DOMAIN
ok(dups <= bound, "duplicates %d, bounded by the transactions in flight at the kills (%d)"
   % (dups, bound))
foreign = [i for i in received_set if not re.match(r"r\d+-\d+$", i)]
ok(not foreign, "the sink saw only ids the blast runs sent")
diag("acked %d, received %d distinct, %d duplicates, %d unacked but delivered"
     % (len(acked_set), len(received_set), dups, len(received_set - acked_set)))
done()
