#!/usr/bin/python3
"""test_auth.py - SMTP AUTH on the injection listener (issue 4).

ringmail-passwd makes the auth_file (yescrypt and sha512-crypt lines) and
refuses bad usage; a listener with allowed_networks 127.0.0.1/32 and that
auth_file is then used from 127.0.0.2 (loopback, so AUTH is offered, but
not an allowed network): RCPT is refused before AUTH, wrong passwords and
unknown users get 535 for PLAIN and LOGIN, the right ones get 235 and may
then relay (the message is in the spool). A non-loopback-only rule cannot
be exercised on a loopback-only test machine; it is covered by the code
path that sets auth_is_offered (eng_listen.c).
Usage: test_auth.py BUILD_ROOT
"""
import base64
import os
import smtplib
import subprocess
import sys

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

d = Daemon(root, "auth", listeners={"main": "allowed_networks = 127.0.0.1/32\n"
                                    "auth_file = AUTHFILE\n"})
authfile = os.path.join(d.dir, "auth.txt")
with open(authfile, "w") as f:
    f.write("# users\n" + alice + bob)
with open(d.conf) as f:
    conf = f.read().replace("AUTHFILE", authfile)
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


for mech in ("PLAIN", "LOGIN"):
    s, code = try_auth(mech, "alice", "wrong")
    ok(code == 535, "AUTH %s with a wrong password: 535 (%d)" % (mech, code))
    s.close()
    s, code = try_auth(mech, "mallory", "correct horse")
    ok(code == 535, "AUTH %s with an unknown user: 535 (%d)" % (mech, code))
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
done()
