#!/usr/bin/python3
"""test_inject_crash.py - kill -9 under injection load: a 250 is a promise.

Each round starts the daemon on the same spool, runs smtp-source-style
load (several client threads, each keeping a session open and sending
message after message; every queue id a 250 named goes into the ledger
with the message's bytes), kills the daemon with SIGKILL at a random
moment, and lets the clients fail. After the last round every acknowledged
queue id must be in the spool (ringmail-spool ls --json) with its exact
message (a sample checked with show --json), and the daemon must recover
the spool, start and stop cleanly. Messages in the spool that were never
acknowledged are allowed (the ack was lost with the process).

RINGMAIL_CRASH_ROUNDS (default 20) and RINGMAIL_CRASH_SEED change the run;
the seed is printed so a failure can be replayed.
Usage: test_inject_crash.py BUILD_ROOT
"""
import os
import random
import smtplib
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from daemon_tap import Daemon, build_root, diag, done, ok, queue_id_of  # noqa: E402

rounds = int(os.environ.get("RINGMAIL_CRASH_ROUNDS", "20"))
seed = int(os.environ.get("RINGMAIL_CRASH_SEED", str(random.SystemRandom().randrange(1 << 32))))
diag("seed %d (RINGMAIL_CRASH_SEED=%d to replay), %d rounds" % (seed, seed, rounds))
rng = random.Random(seed)
THREADS = 4

root = build_root()
d = Daemon(root, "crash", listeners={"main": "message_size_limit = 64k\nrecipients_max = 10\n"},
           segment_size="4M")
ledger = {}  # queue id -> message bytes
ledger_lock = threading.Lock()
errors = []


def loader(port, round_index, thread_index, stop, seed_value):
    trng = random.Random(seed_value)
    n = 0
    while not stop.is_set():
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=20) as s:
                s.ehlo("crash.test")
                while not stop.is_set():
                    n += 1
                    body = ("Subject: crash r%d t%d n%d\r\n\r\n" % (round_index, thread_index, n)
                            + "x" * trng.randrange(10, 3000) + "\r\n").encode()
                    s.mail("load@crash.test")
                    s.rcpt("r%d@dest%d.test" % (n, thread_index))
                    code, text = s.data(body)
                    q = queue_id_of(text.decode(errors="replace"))
                    if code == 250 and q:
                        with ledger_lock:
                            ledger[q] = body
        except (OSError, smtplib.SMTPException):
            return  # the daemon was killed: this round is over for us


total_killed = 0
for r in range(rounds):
    if not d.start(timeout=120):
        ok(False, "round %d: daemon starts on the crashed spool" % r)
        break
    stop = threading.Event()
    threads = [threading.Thread(target=loader, args=(d.ports["main"], r, t, stop,
                                                     rng.randrange(1 << 30)))
               for t in range(THREADS)]
    for t in threads:
        t.start()
    time.sleep(rng.uniform(0.05, 1.5))
    d.kill9()
    total_killed += 1
    stop.set()
    for t in threads:
        t.join(timeout=120)
    if any(t.is_alive() for t in threads):
        errors.append("round %d: a client thread hung" % r)

ok(total_killed == rounds, "%d kill -9 rounds under load" % total_killed)
ok(not errors, "client threads ended after each kill")
for e in errors:
    diag(e)
ok(len(ledger) > 0, "messages were acknowledged (%d)" % len(ledger))

spool = d.spool_ls()
missing = sorted(q for q in ledger if q not in spool)
ok(not missing, "every acknowledged queue id is in the spool (%d acked, %d stored)"
   % (len(ledger), len(spool)))
if missing:
    diag("missing %d, e.g. %s" % (len(missing), missing[:5]))

sample = rng.sample(sorted(ledger), min(40, len(ledger)))
bad = []
for q in sample:
    js = d.spool_show(q)
    if js is None:
        bad.append(q)
        continue
    stored = (js["headers"] + "\r\n" + js["body"]).encode()
    if not (stored.startswith(b"Received: ") and stored.endswith(ledger[q])):
        bad.append(q)
ok(not bad, "a sample of %d acknowledged messages is stored byte for byte" % len(sample))

ok(d.start(timeout=120), "the daemon recovers the spool after %d crashes" % rounds)
recovered = [l for l in d.output() if "ringmail: started" in l][-1:]
diag(recovered)
ok(d.stop(), "and stops with exit 0")
done()
