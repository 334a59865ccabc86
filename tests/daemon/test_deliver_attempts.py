#!/usr/bin/python3
"""test_deliver_attempts.py - attempt counts and queue age survive a restart
(issue 3: "every outcome durable in the journal"; docs/spool-format.md 2.2,
OUTCOME version 2).

A message is injected through the listener; tests/daemon/rec_sink.py
answers 451 to its recipient's domain (--defer-domain), 250 to others.

1. Attempts across a restart: retry_schedule = 1s, 2s, 1h (no jitter).
   The delivery log shows TransientFailure attempt 1, then attempt 2; the
   daemon is stopped (SIGTERM) before attempt 3 is due and started again;
   attempt 3 is logged after the restart, with queued_ms counted from
   reception. Then `ringmail-spool --json ls` shows the recipient deferred
   with 3 attempts and its next attempt about an hour away: the back-off
   went on to step 3. A daemon that restarted the count would log attempt
   1 and retry a second later.
2. Queue lifetime from reception, and the expiry DSN of a read-back body:
   with the daemon stopped, `ringmail-spool load` stores a second message
   (never attempted, its body only on disk); once more than
   max_queue_lifetime (1s) has passed since then the daemon is started.
   The recipient is recovered, its body read back from the spool, the 451
   makes it expire at once (Expiration, 4.4.7, attempt 1), and the DSN
   that reaches the sink quotes the original headers (Subject,
   Message-ID). The first message, due in an hour, is left alone.

Runs in about 7 s. Usage: test_deliver_attempts.py BUILD_ROOT
"""
import datetime
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from daemon_tap import (Client, Daemon, _children, build_root, diag, done, ok,  # noqa: E402
                        read_jsonl, wait_for)

root = build_root()
here = os.path.dirname(os.path.abspath(__file__))


def events(log, rcpt, kind=None):
    """Delivery-log events of rcpt (kind, or every attempt: not Reception)."""
    return [e for e in read_jsonl(log) if e.get("recipient") == rcpt
            and (e.get("type") == kind if kind else e.get("type") != "Reception")]


def inject(port, sender, rcpt, subject):
    """One message through the listener; True on 250."""
    c = Client(port)
    try:
        steps = [(None, 220), (b"EHLO attempts.test\r\n", 250),
                 (("MAIL FROM:<%s>\r\n" % sender).encode(), 250),
                 (("RCPT TO:<%s>\r\n" % rcpt).encode(), 250), (b"DATA\r\n", 354)]
        for data, want in steps:
            code, lines = c.reply() if data is None else c.cmd(data)
            if code != want:
                diag("inject: %r -> %d %s" % (data, code, lines))
                return False
        body = ("From: <%s>\r\nTo: <%s>\r\nSubject: %s\r\nMessage-ID: <%s@attempts.test>\r\n"
                "\r\nbody line\r\n.\r\n" % (sender, rcpt, subject, subject.replace(" ", "-")))
        code, lines = c.cmd(body.encode())
        c.cmd(b"QUIT\r\n")
        return code == 250
    finally:
        c.close()


d = Daemon(root, "dattempts")
log = os.path.join(d.dir, "delivery.log")
record = os.path.join(d.dir, "sink.jsonl")


def write_conf(hold, lifetime):
    with open(d.conf, "w") as f:
        f.write("[engine]\nspool_dir = %s\nshards = 1\nfree_space_reserve = 0\n"
                "segment_size = 16M\njournal_segment_size = 1M\n"
                "retry_schedule = 1s, 2s, 1h\nretry_jitter = 0\nmax_queue_lifetime = %s\n"
                "hold = %s\ndelivery_log = %s\n\n[route all]\ndomains = *\n"
                "hosts = 127.0.0.1:%d\n\n[listener main]\naddress = 127.0.0.1:%d\n"
                % (d.spool, lifetime, "yes" if hold else "no", log, d.sink_port,
                   d.ports["main"]))


sink = subprocess.Popen(["/usr/bin/python3", os.path.join(here, "rec_sink.py"), "--port",
                         str(d.sink_port), "--record", record, "--stats",
                         os.path.join(d.dir, "sink.stats"), "--defer-domain", "defer.test",
                         "--defer-domain", "d0.test"],
                        stdout=subprocess.PIPE)
_children.append(sink)
ok(sink.stdout.readline().startswith(b"listening"),
   "rec_sink listens (451 for defer.test and d0.test)")

# ---- 1. attempts 1, 2, restart, 3; the back-off goes on ----
RCPT1 = "x@defer.test"
write_conf(hold=False, lifetime="1h")
ok(d.start(), "daemon started")
t_inject = time.time()
ok(inject(d.ports["main"], "a@ok.test", RCPT1, "attempts one"), "message 1 accepted")
wait_for(lambda: len(events(log, RCPT1, "TransientFailure")) >= 2, 60, 0.05)
ok(d.stop(), "SIGTERM after attempt 2: exit 0")
before = events(log, RCPT1)
ok([(e["type"], e["attempt"]) for e in before] ==
   [("TransientFailure", 1), ("TransientFailure", 2)],
   "before the restart: TransientFailure attempts 1, 2 (%s)"
   % [(e["type"], e["attempt"]) for e in before])
ok(all(e["code"] == 451 for e in before), "each one the sink's 451")

ok(d.start(), "daemon restarted")
wait_for(lambda: len(events(log, RCPT1)) >= 3, 60, 0.05)
after = events(log, RCPT1)[2:]
ok(len(after) == 1 and after[0]["type"] == "TransientFailure" and after[0]["attempt"] == 3,
   "after the restart: TransientFailure attempt 3 (%s)"
   % [(e["type"], e["attempt"]) for e in after])
queued_ms = after[0]["timings"]["queued_ms"] if after else None
ok(queued_ms is not None and queued_ms >= 2500 and
   queued_ms <= (time.time() - t_inject) * 1000 + 1000,
   "queued_ms %s counts from reception (%.1f s ago)" % (queued_ms, time.time() - t_inject))
ok(d.stop(), "stopped again: exit 0")
listing = d.spool_ls()
rcpts = [r for m in listing.values() for r in m.get("recipients", [])]
r1 = [r for r in rcpts if r.get("address") == RCPT1]
ok(len(r1) == 1 and r1[0].get("state") == "deferred" and r1[0].get("attempts") == 3,
   "ringmail-spool ls: deferred with 3 attempts (%s)" % r1)
wait_s = (r1[0].get("next_attempt_ns", 0) / 1e9 - time.time()) if r1 else 0
ok(wait_s > 50 * 60, "next attempt in %.0f s: retry step 3 (1h), not step 1" % wait_s)

# ---- 2. lifetime from reception; expiry DSN of a read-back body ----
RCPT2 = "user0@d0.test"
t2 = time.time()
r = subprocess.run([d.spool_tool, "-d", d.spool, "load", "--shards", "1", "--count", "1",
                    "--domains", "1", "--size", "2000", "--sender", "a@ok.test"],
                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
ok(r.returncode == 0, "ringmail-spool load: message 2 stored, daemon stopped")
shown = [d.spool_show(q) for q, m in d.spool_ls().items()
         if any(x.get("address") == RCPT2 for x in m.get("recipients", []))]
headers = shown[0]["headers"] if len(shown) == 1 and shown[0] else ""
subject = [l for l in headers.split("\r\n") if l.startswith(("Subject:", "Message-ID:"))]
ok(len(subject) == 2, "its Subject and Message-ID read back (%s)" % subject)
write_conf(hold=False, lifetime="1s")
time.sleep(max(0.0, t2 + 1.2 - time.time()))  # a wall-clock age, not synchronisation
ok(d.start(), "restarted with max_queue_lifetime = 1s")


def dsn_records():
    return [r for r in read_jsonl(record) if r["from"] == "" and "a@ok.test" in r["rcpts"]]


wait_for(lambda: events(log, RCPT2) and dsn_records(), 60, 0.05)
ev2 = events(log, RCPT2)
ok(len(ev2) == 1 and ev2[0]["type"] == "Expiration" and ev2[0]["attempt"] == 1 and
   ev2[0]["enhanced"] == "4.4.7",
   "message 2: Expiration at its first attempt, 4.4.7 (%s)"
   % [(e["type"], e["attempt"], e.get("enhanced")) for e in ev2])
dsns = dsn_records()
ok(len(dsns) == 1, "one DSN to the sender reached the sink (%d)" % len(dsns))
body = dsns[0]["body"] if dsns else ""
ok("multipart/report" in body and len(subject) == 2 and all(h in body for h in subject),
   "the expiry DSN of the read-back body quotes its headers")
ok(events(log, RCPT1, "Expiration") == [] and len(events(log, RCPT1)) == 3,
   "message 1, due in an hour, untouched")
ok(d.stop(), "final stop: exit 0")
if any("ringmail: " in l and "unreadable" in l for l in d.output()):
    diag("\n".join(d.output()[-20:]))

sink.terminate()
sink.wait(timeout=30)
done()
