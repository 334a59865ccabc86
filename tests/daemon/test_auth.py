#!/usr/bin/python3
"""test_auth.py - SMTP AUTH on the injection listener (issue 4).

ringmail-passwd makes the auth_file (yescrypt and sha512-crypt lines) and
refuses bad usage; a listener with allowed_networks 127.0.0.1/32 and that
auth_file is then used from 127.0.0.2 (loopback, so AUTH is offered, but
not an allowed network): RCPT is refused before AUTH, wrong passwords and
unknown users get 535 for PLAIN and LOGIN, the right ones get 235 and may
then relay (the message is in the spool); a wrong then a right password in
one session (the 535 held back by the failure delay); a slow hash on the
AUTH worker while another session of the only shard is served; SIGHUP
reloads the auth_file (a malformed one keeps the previous table); a
malformed auth_file fails the start-up naming file:line. A non-loopback-only rule cannot
be exercised on a loopback-only test machine; it is covered by the code
path that sets auth_is_offered (eng_listen.c).
Usage: test_auth.py BUILD_ROOT
"""
import base64
import concurrent.futures
import os
import select
import signal
import smtplib
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from daemon_tap import Client, Daemon, build_root, diag, done, ok, queue_id_of  # noqa: E402

root = build_root()
passwd = os.path.join(root, "tools", "ringmail-passwd")


def run_passwd(args, stdin):
    r = subprocess.run([passwd] + args, input=stdin, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=60)
    return r.returncode, r.stdout.decode(), r.stderr.decode()


rc, alice, _ = run_passwd(["alice"], b"correct horse\n")
ok(rc == 0 and alice.startswith("alice:$y$") and alice.endswith("\n"),
   "ringmail-passwd USER: a yescrypt line (%s)" % alice.strip()[:20])
rc, bob, _ = run_passwd(["-m", "sha512", "bob"], b"battery staple")
ok(rc == 0 and bob.startswith("bob:$6$"), "ringmail-passwd -m sha512: a $6$ line")
rc2, alice2, _ = run_passwd(["alice"], b"correct horse\n")
ok(rc2 == 0 and alice2 != alice, "a fresh salt every time")
ok(run_passwd([], b"x\n")[0] == 64, "no USER: exit 64")
ok(run_passwd(["a:b"], b"x\n")[0] == 64, "USER with ':': exit 64")
rc, _, err = run_passwd(["carol"], b"")
ok(rc == 1 and "no password" in err, "empty stdin: exit 1 with a message")

# A slow hash (sha512-crypt, 800k rounds: ~0.4 s of CPU) keeps the AUTH
# worker busy long enough to see another session served meanwhile.
SLOW_ROUNDS = 800000
slow = None
try:
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import crypt
    slow = "slow:%s\n" % crypt.crypt("slow pass", "$6$rounds=%d$h4slowsalt" % SLOW_ROUNDS)
except (ImportError, OSError):
    pass

d = Daemon(root, "auth", listeners={"main": "allowed_networks = 127.0.0.1/32\n"
                                    "auth_file = AUTHFILE\n"})
authfile = os.path.join(d.dir, "auth.txt")
with open(authfile, "w") as f:
    f.write("# users\n" + alice + bob + (slow or ""))
with open(d.conf) as f:
    # one shard: every session below shares the ring the AUTH must not block
    conf = f.read().replace("AUTHFILE", authfile).replace("shards = 2\n", "shards = 1\n")
with open(d.conf, "w") as f:
    f.write(conf)
if not ok(d.start(), "daemon starts with auth_file"):
    done()
port = d.ports["main"]


def client():
    s = smtplib.SMTP("127.0.0.1", port, timeout=60, source_address=("127.0.0.2", 0))
    s.ehlo("auth.test")
    return s


s = client()
ok(s.has_extn("auth") and "PLAIN" in s.esmtp_features.get("auth", "").upper()
   and "LOGIN" in s.esmtp_features.get("auth", "").upper(),
   "AUTH PLAIN LOGIN offered to a loopback client")
s.mail("relay@src.test")
code, _ = s.rcpt("far@away.test")
ok(500 <= code < 600, "before AUTH, from 127.0.0.2: RCPT refused (%d)" % code)
s.quit()


def try_auth(mech, user, password):
    s = client()
    s.user, s.password = user, password
    try:
        code, _ = s.auth(mech, s.auth_plain if mech == "PLAIN" else s.auth_login)
    except smtplib.SMTPAuthenticationError as e:
        code = e.smtp_code
    return s, code


# Failures are answered after a delay: the four run side by side.
bad_tries = [(mech, user, pw) for mech in ("PLAIN", "LOGIN")
             for user, pw in (("alice", "wrong"), ("mallory", "correct horse"))]
with concurrent.futures.ThreadPoolExecutor(len(bad_tries)) as pool:
    results = list(pool.map(lambda t: try_auth(*t), bad_tries))
for (mech, user, _), (s, code) in zip(bad_tries, results):
    what = "a wrong password" if user == "alice" else "an unknown user"
    ok(code == 535, "AUTH %s with %s: 535 (%d)" % (mech, what, code))
    s.close()

qids = []
for mech, user, pw in (("PLAIN", "alice", "correct horse"), ("LOGIN", "bob", "battery staple")):
    s, code = try_auth(mech, user, pw)
    ok(code == 235, "AUTH %s %s with the right password: 235 (%d)" % (mech, user, code))
    s.mail("relay@src.test")
    rc = s.rcpt("far@away.test")[0]
    dc, text = s.data(b"Subject: relayed\r\n\r\nafter auth\r\n")
    q = queue_id_of(text.decode())
    ok(rc == 250 and dc == 250 and q is not None,
       "after AUTH %s the client may relay (%d %d %s)" % (mech, rc, dc, q))
    if q:
        qids.append(q)
    s.quit()

c = Client(port, source="127.0.0.2")
c.reply()
c.cmd(b"EHLO raw.test\r\n")
code, _ = c.cmd(b"AUTH PLAIN " + base64.b64encode(b"bob\0alice\0correct horse") + b"\r\n")
ok(code == 535, "PLAIN with an authorization identity of someone else: 535 (%d)" % code)
code, _ = c.cmd(b"AUTH PLAIN !!!notbase64\r\n")
ok(500 <= code < 600, "AUTH PLAIN with bad base64: 5xx (%d)" % code)
c.close()



def plain(user, pw):
    return b"AUTH PLAIN " + base64.b64encode(b"\0" + user + b"\0" + pw) + b"\r\n"


def greeted():
    c = Client(port, source="127.0.0.2")
    c.reply()
    c.cmd(b"EHLO raw.test\r\n")
    return c


# A wrong password, then the right one, in one session: the 535 is held
# back (the failure delay), then the session goes on and may relay.
c = greeted()
t0 = time.monotonic()
code, _ = c.cmd(plain(b"alice", b"wrong"))
held = time.monotonic() - t0
ok(code == 535 and held >= 0.4, "wrong password: 535 held back %.2f s (>= 0.4)" % held)
code, _ = c.cmd(plain(b"alice", b"correct horse"))
ok(code == 235, "then the right password in the same session: 235 (%d)" % code)
codes = [c.cmd(b"MAIL FROM:<relay@src.test>\r\n")[0], c.cmd(b"RCPT TO:<far@away.test>\r\n")[0],
         c.cmd(b"DATA\r\n")[0]]
code, text = c.cmd(b"Subject: after a retry\r\n\r\nsecond try\r\n.\r\n")
q = queue_id_of(" ".join(text))
ok(codes == [250, 250, 354] and code == 250 and q is not None,
   "and relays (%s %d %s)" % (codes, code, q))
if q:
    qids.append(q)
c.cmd(b"QUIT\r\n")
c.close()


def has_data(sock):
    r, _, _ = select.select([sock], [], [], 0)
    return bool(r)


# The hash runs on the node's AUTH worker, not on the shard's ring: while
# a slow AUTH is being checked, another session of the (only) shard gets
# its replies, and the slow AUTH's reply comes after them.
if slow is None:
    ok(True, "# SKIP python3 crypt module missing: no slow hash")
else:
    a, b = greeted(), greeted()
    t0 = time.monotonic()
    a.send(plain(b"slow", b"slow pass"))
    b_codes = [b.cmd(b"NOOP\r\n")[0] for _ in range(3)]
    b_time = time.monotonic() - t0
    a_pending = not has_data(a.sock) and not a.buf
    code, _ = a.reply()
    a_time = time.monotonic() - t0
    ok(code == 235 and b_codes == [250, 250, 250] and a_pending and b_time < a_time,
       "a slow AUTH does not block the shard: 3 NOOPs of another session in %.3f s, "
       "the AUTH's 235 after %.3f s (%d %s, answered meanwhile: %s)"
       % (b_time, a_time, code, b_codes, not a_pending))
    a.close()
    b.close()

# SIGHUP reads the auth_file again: a new user works, a removed one no
# longer does; a malformed file is refused with one line and the previous
# table stays in force.
rc, carol, _ = run_passwd(["-m", "sha512", "carol"], b"new pass")
with open(authfile, "w") as f:
    f.write(carol + bob)
mark = len(d.output())
d.proc.send_signal(signal.SIGHUP)
ok(d.wait_line(r"configuration reloaded", 60, mark) not in (None, "EXITED"), "SIGHUP: reloaded")
_, code = try_auth("PLAIN", "carol", "new pass")
ok(code == 235, "after SIGHUP a user added to auth_file may AUTH (%d)" % code)
_, code = try_auth("PLAIN", "alice", "correct horse")
ok(code == 535, "and a removed one may not (%d)" % code)
with open(authfile, "w") as f:
    f.write(bob + "no colon on this line\n")
mark = len(d.output())
d.proc.send_signal(signal.SIGHUP)
line = d.wait_line(r"SIGHUP: listener main: .*auth\.txt:2: ", 60, mark)
ok(line not in (None, "EXITED") and "previous auth_file stays" in line,
   "SIGHUP with a malformed auth_file: one line naming file:line (%s)" % line)
d.wait_line(r"configuration reloaded", 60, mark)
_, code = try_auth("PLAIN", "carol", "new pass")
ok(code == 235, "the previous table stays in force (%d)" % code)
ok(d.proc.poll() is None, "the daemon runs on")

spool = d.spool_ls()
ok(qids and all(q in spool for q in qids) and len(spool) == len(qids),
   "exactly the relayed messages are in the spool (%d)" % len(spool))
ok(d.stop(), "SIGTERM: daemon exits 0")

bad = Daemon(root, "authbad", listeners={"main": "auth_file = %s\n" % os.path.join(
    root, "no-such-auth-file")})
ok(not bad.start(timeout=60) and bad.proc.wait(timeout=30) != 0 and
   any("no-such-auth-file" in l for l in bad.output()),
   "a missing auth_file is a one-line start-up error with a non-zero exit")
bad.proc = None

# A malformed line: the start-up fails with one line naming file and line.
bad2 = Daemon(root, "authbad2", listeners={"main": "auth_file = AUTHFILE\n"})
badfile = os.path.join(bad2.dir, "bad-auth.txt")
with open(badfile, "w") as f:
    f.write("# ok\n" + alice + "alice\n")
with open(bad2.conf) as f:
    conf = f.read().replace("AUTHFILE", badfile)
with open(bad2.conf, "w") as f:
    f.write(conf)
started = bad2.start(timeout=60)
rc = bad2.proc.wait(timeout=30)
errs = [l for l in bad2.output() if "bad-auth.txt:3:" in l]
ok(not started and rc != 0 and len(errs) == 1 and "listener main" in errs[0],
   "a malformed auth_file line: one start-up line naming file:line, exit %d (%s)"
   % (rc, errs[:1]))
bad2.proc = None
done()
