#!/usr/bin/python3
"""test_inject.py - SMTP injection end to end with real clients (issue 4).

Python smtplib (several recipients), swaks (plain and --pipeline), a raw
BDAT (CHUNKING) client (the installed swaks has no --bdat), and Postfix
smtp-source (-s 10 -m 200) inject into the listener; then every queue id
a 250 reply named is in the spool (ringmail-spool ls --json) with its
envelope, the stored message is the Received: trace header followed by
the sent message byte for byte (ringmail-spool show --json), its trace
id is the queue id of the 250 reply, every
smtp-source message is there, and the daemon stops with exit 0 and
per-listener stats that count the messages.

Delivery goes to a closed port (retry in 1 h): messages stay in the spool.
Usage: test_inject.py BUILD_ROOT
"""
import os
import re
import shutil
import smtplib
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from daemon_tap import Client, Daemon, build_root, diag, done, ok, queue_id_of  # noqa: E402

root = build_root()
d = Daemon(root, "inject")
if not ok(d.start(), "daemon starts with a listener"):
    done()
port = d.ports["main"]
ok(any(re.search(r"listening on 127\.0\.0\.1:%d \(listener main, shards 2\)" % port, l)
       for l in d.output()), "start-up line names the listener address and shards")

expected = {}  # queue id -> (sender, [rcpts], message bytes or None)


def stored_message(qid):
    js = d.spool_show(qid)
    if js is None:
        return None
    return (js["headers"] + "\r\n" + js["body"]).encode("utf-8", "surrogateescape")


# --- smtplib: several recipients, lines that need dot-stuffing ---
msg = (b"From: a@src.test\r\nTo: x@one.test, y@two.test\r\nSubject: smtplib\r\n\r\n"
       b"line one\r\n.starts with a dot\r\n..two dots\r\n.\r\nlast line\r\n")
rcpts = ["x@one.test", "y@two.test", "z@three.test"]
try:
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as s:
        code, _ = s.ehlo("client.test")
        ok(code == 250 and s.has_extn("pipelining") and s.has_extn("chunking")
           and s.has_extn("size") and s.has_extn("enhancedstatuscodes"),
           "EHLO advertises PIPELINING, CHUNKING, SIZE, ENHANCEDSTATUSCODES")
        ok(s.mail("a@src.test")[0] == 250, "smtplib MAIL 250")
        ok(all(s.rcpt(r)[0] == 250 for r in rcpts), "smtplib 3 RCPT 250")
        code, text = s.data(msg)
        qid = queue_id_of(text.decode())
        ok(code == 250 and qid is not None, "smtplib DATA 250 with a queue id (%s)" % qid)
        if qid:
            expected[qid] = ("a@src.test", rcpts, msg)
except (OSError, smtplib.SMTPException) as e:
    ok(False, "smtplib session: %s" % e)

# --- swaks: plain and pipelined ---
swaks = shutil.which("swaks")
body_swaks = "Subject: swaks %s\r\n\r\nbody from swaks\r\n.leading dot\r\n"
for mode, extra in (("plain", []), ("pipelined", ["--pipeline"])):
    if swaks is None:
        ok(True, "# SKIP swaks not installed (%s)" % mode)
        continue
    r = subprocess.run([swaks, "--server", "127.0.0.1:%d" % port, "--from", "s@swaks.test",
                        "--to", "r1@a.test,r2@b.test", "--data", body_swaks % mode,
                        "--timeout", "60"] + extra,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
    out = r.stdout.decode(errors="replace")
    qid = queue_id_of(out)
    ok(r.returncode == 0 and qid is not None, "swaks %s: 250 with a queue id" % mode)
    if mode == "pipelined":
        ok(re.search(r"-> MAIL FROM.*\n -> RCPT TO.*\n -> RCPT TO.*\n -> DATA", out) is not None,
           "swaks really pipelined MAIL, RCPT, RCPT, DATA")
    if qid:
        expected[qid] = ("s@swaks.test", ["r1@a.test", "r2@b.test"], None)
    else:
        diag(out[-2000:])

# --- BDAT (CHUNKING), raw: two chunks, the last with LAST ---
c = Client(port)
c.reply()
c.cmd(b"EHLO bdat.test\r\n")
chunk1 = b"From: b@bdat.test\r\nSubject: bdat\r\n\r\n.a dot line\r\n"
chunk2 = b"second chunk\r\nend\r\n"
c.send(b"MAIL FROM:<b@bdat.test>\r\nRCPT TO:<q@bdat.test>\r\nBDAT %d\r\n" % len(chunk1) + chunk1)
replies = [c.reply() for _ in range(3)]
code, lines = c.cmd(b"BDAT %d LAST\r\n" % len(chunk2) + chunk2)
qid = queue_id_of(" ".join(lines))
ok([r[0] for r in replies] == [250, 250, 250] and code == 250 and qid is not None,
   "BDAT in two chunks: 250 with a queue id")
if qid:
    expected[qid] = ("b@bdat.test", ["q@bdat.test"], chunk1 + chunk2)
c.cmd(b"QUIT\r\n")
c.close()

# --- Postfix smtp-source: 10 sessions, 200 messages ---
source = shutil.which("smtp-source") or ("/usr/sbin/smtp-source"
                                          if os.path.exists("/usr/sbin/smtp-source") else None)
if source is None:
    ok(True, "# SKIP smtp-source not installed")
else:
    r = subprocess.run([source, "-s", "10", "-m", "200", "-f", "load@source.test",
                        "-t", "sink@dest.test", "127.0.0.1:%d" % port],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
    ok(r.returncode == 0, "smtp-source -s 10 -m 200 exits 0")
    if r.returncode != 0:
        diag(r.stdout.decode(errors="replace")[-2000:])

# --- the spool, read back while the daemon runs ---
spool = d.spool_ls()
missing = [q for q in expected if q not in spool]
ok(not missing, "every acknowledged queue id is in the spool (%d)" % len(expected))
if missing:
    diag("missing: %s" % missing)
env_ok = all(spool[q]["sender"] == exp[0] and
             [r["address"] for r in spool[q]["recipients"]] == exp[1]
             for q, exp in expected.items() if q in spool)
ok(env_ok, "stored envelopes match sender and recipients in order")
for q, (_, _, sent) in expected.items():
    if sent is None:
        continue
    stored = stored_message(q)
    ok(stored is not None and stored.endswith(sent) and stored.startswith(b"Received: from ")
       and stored[:len(stored) - len(sent)].count(b"\r\n") <= 4,
       "message %s stored as Received: + the sent bytes" % q)
    if stored is not None and not stored.endswith(sent):
        diag(repr(stored[-300:]))
        diag(repr(sent[-300:]))
# The trace header's id is the queue id of the 250 reply (and of the spool,
# the delivery log): an operator greps for the id found in a header.
ids_ok = []
for q in expected:
    head = (stored_message(q) or b"").split(b"\r\n\r\n")[0]
    m = re.match(rb"Received: from [^\r]*\r\n\tby [^\r]* with \w+ id ([0-9a-f]{26})[;\r]", head)
    ids_ok.append(m is not None and m.group(1).decode() == q)
    if m is None or m.group(1).decode() != q:
        diag("queue id %s, header %r" % (q, head[:200]))
ok(ids_ok and all(ids_ok), "Received: id is the 250's queue id, for all %d messages (smtplib, "
   "swaks, BDAT)" % len(ids_ok))
one = [q for q, e in expected.items() if len(e[1]) == 1]
if one:
    stored = stored_message(one[0]) or b""
    ok(b"for <q@bdat.test>;" in stored.split(b"\r\n\r\n")[0] and b"[127.0.0.1]" in stored,
       "Received: names the client IP and the single recipient")
swaks_q = [q for q, e in expected.items() if e[0] == "s@swaks.test"]
for q in swaks_q:
    stored = stored_message(q) or b""
    ok(b"\r\n\r\nbody from swaks\r\n.leading dot\r\n" in stored,
       "swaks message %s body stored byte-identical" % q)
if source is not None:
    from_source = [q for q, m in spool.items() if m["sender"] == "load@source.test"]
    ok(len(from_source) == 200, "all 200 smtp-source messages in the spool (%d)"
       % len(from_source))
    ok(all(len(spool[q]["recipients"]) == 1 and
           spool[q]["recipients"][0]["address"] == "sink@dest.test" for q in from_source),
       "smtp-source envelopes stored")

total = len(spool)
ok(d.stop(), "SIGTERM: daemon exits 0")
st = d.stats_line()
ok(st is not None and st["messages"] == total and st["rejected"] == 0 and st["refused"] == 0,
   "listener stats count %d messages, nothing refused or rejected (%s)" % (total, st))
after = d.spool_ls()
ok(set(after) == set(spool), "after the stop the spool holds the same messages")

# --- the listening address is taken: a one-line start-up error, exit 1 ---
import socket  # noqa: E402
busy = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
busy.bind(("127.0.0.1", 0))
busy.listen(1)
b = Daemon(root, "busy")
with open(b.conf) as f:
    conf = f.read().replace("address = 127.0.0.1:%d" % b.ports["main"],
                            "address = 127.0.0.1:%d" % busy.getsockname()[1])
with open(b.conf, "w") as f:
    f.write(conf)
started = b.start(timeout=60)
rc = b.proc.wait(timeout=60) if b.proc is not None else None
errs = [l for l in b.output() if "cannot listen on 127.0.0.1:%d" % busy.getsockname()[1] in l]
ok(not started and rc not in (None, 0) and len(errs) == 1 and "Address already in use" in errs[0],
   "address in use: one start-up line, non-zero exit (%s)" % (errs[:1],))
b.proc = None
busy.close()

# --- listener keys are checked at load with file:line: [listener NAME] key ---
bad_conf = os.path.join(b.dir, "bad.conf")
with open(bad_conf, "w") as f:
    f.write("[engine]\nspool_dir = %s\n\n[listener x]\naddress = 127.0.0.1:2525\n"
            "greeting_delay = 2h\n" % b.spool)
r = subprocess.run([d.ringmail, "-t", "-c", bad_conf], stdout=subprocess.PIPE,
                   stderr=subprocess.STDOUT, timeout=60)
out = r.stdout.decode(errors="replace").strip()
ok(r.returncode != 0 and "bad.conf:6:" in out and "[listener x] greeting_delay" in out,
   "greeting_delay out of range: error names file:line and key (%s)" % out)
done()
