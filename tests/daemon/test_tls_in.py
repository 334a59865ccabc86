#!/usr/bin/python3
"""test_tls_in.py - STARTTLS on the injection listener (issue 7, Inbound).

Certificates come from tests/lib/tls_certs.sh (made fresh, nothing checked
in). One daemon with three listeners: "main" (tls_certificate/tls_key),
"req" (the same plus require_tls) and "auth" (TLS, an auth_file, relaying
only for 127.0.0.1, used from 127.0.0.2). Checked with real peers:
- swaks --tls submits a message: 250 with its queue id, the record is in
  the spool and its Received: says "with ESMTPS" and names the cipher;
- openssl s_client -starttls smtp sees the configured certificate (the
  SHA-256 fingerprint of server.pem);
- INJ-05 (CVE-2011-0411): "STARTTLS\\r\\nMAIL FROM:<a@b>\\r\\n" in one write,
  then the handshake: the first reply under TLS answers our own command and
  RCPT gets 503 (MAIL never ran), also with an EHLO+MAIL injected;
- require_tls: MAIL before STARTTLS gets 530, after TLS a message is queued;
- AUTH is advertised after TLS (and STARTTLS no more), AUTH PLAIN under TLS
  relays;
- SIGHUP with a new certificate: a new connection sees it, a TLS session
  opened before keeps working; a reload with a missing certificate keeps
  the previous one (one line);
- a bad tls_certificate path is a one-line start-up error, exit non-zero;
  require_tls without a certificate is a configuration error.
Usage: test_tls_in.py BUILD_ROOT
"""
import base64
import hashlib
import os
import re
import signal
import ssl
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from daemon_tap import Client, Daemon, build_root, diag, done, ok, queue_id_of  # noqa: E402

root = build_root()
here = os.path.dirname(os.path.abspath(__file__))
certs_script = os.path.join(here, "..", "lib", "tls_certs.sh")
TIMEOUT = 60.0


class TlsClient(Client):
    """A raw SMTP client (daemon_tap.Client) that can switch to TLS after
    the 220 to STARTTLS."""

    def __init__(self, port, source="127.0.0.1"):
        super().__init__(port, source=source, timeout=TIMEOUT)

    def pending(self):
        """Bytes already received but not read as a reply."""
        return self.buf

    def start_tls(self, cafile):
        """Handshake (verifying the chain against cafile). Returns the peer
        certificate as a dict, or None if the handshake failed."""
        ctx = ssl.create_default_context(cafile=cafile)
        ctx.check_hostname = False  # the SIGHUP certificate names other.invalid
        try:
            self.sock = ctx.wrap_socket(self.sock, server_hostname="localhost")
        except (ssl.SSLError, OSError) as e:
            diag("handshake failed: %s" % e)
            return None
        return self.sock.getpeercert()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def cn_of(cert):
    for rdn in (cert or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return value
    return None


def fingerprint_of_pem(path):
    with open(path) as f:
        pem = f.read()
    first = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", pem, re.S)
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(first.group(0))).hexdigest()


def greet(c, name="tls.test"):
    code, _ = c.reply()
    if code != 220:
        return False
    code, lines = c.cmd(b"EHLO " + name.encode() + b"\r\n")
    return code == 250 and lines


d = Daemon(root, "tlsin", listeners={
    "main": "tls_certificate = CERTS/server.pem\ntls_key = CERTS/server.key\n",
    "req": "tls_certificate = CERTS/server.pem\ntls_key = CERTS/server.key\nrequire_tls = yes\n",
    "auth": "tls_certificate = CERTS/server.pem\ntls_key = CERTS/server.key\n"
            "allowed_networks = 127.0.0.1/32\nauth_file = CERTS/auth.txt\n"})
certs = os.path.join(d.dir, "certs")
r = subprocess.run(["sh", certs_script, certs], stdout=subprocess.PIPE,
                   stderr=subprocess.STDOUT, timeout=120)
if not ok(r.returncode == 0, "tls_certs.sh makes the test certificates"):
    diag(r.stdout.decode(errors="replace"))
    done()
ca = os.path.join(certs, "ca.pem")
r = subprocess.run([os.path.join(root, "tools", "ringmail-passwd"), "alice"],
                   input=b"correct horse\n", stdout=subprocess.PIPE, timeout=60)
with open(os.path.join(certs, "auth.txt"), "wb") as f:
    f.write(r.stdout)
with open(d.conf) as f:
    conf_text = f.read().replace("CERTS", certs)
with open(d.conf, "w") as f:
    f.write(conf_text)
if not ok(d.start(), "daemon starts with three TLS listeners"):
    done()
port, req_port, auth_port = d.ports["main"], d.ports["req"], d.ports["auth"]

# ---- swaks --tls ---------------------------------------------------------
r = subprocess.run(["swaks", "--server", "127.0.0.1", "--port", str(port), "--tls",
                    "--from", "a@src.test", "--to", "b@dst.test", "--body", "over tls\n"],
                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
out = r.stdout.decode("utf-8", "replace")
qid = queue_id_of(out)
if not ok(r.returncode == 0 and "TLS started" in out and qid is not None,
          "swaks --tls: STARTTLS, then 250 with a queue id (%s)" % qid):
    diag(out[-2000:])
    if "SSLeay" in out or "IO::Socket::SSL" in out:
        diag("swaks needs libnet-ssleay-perl and libio-socket-ssl-perl for --tls")
show = d.spool_show(qid) if qid else None
headers = show["headers"] if show else ""
ok(show is not None and [x["address"] for x in show["recipients"]] == ["b@dst.test"] and
   "over tls" in show["body"], "the swaks message is in the spool")
ok(re.search(r"with ESMTPS id", headers) is not None and
   re.search(r"\(using TLSv1\.[23] with cipher [A-Za-z0-9_-]+\)", headers) is not None,
   "Received: says ESMTPS and names the TLS version and cipher")
if show is None or "ESMTPS" not in headers:
    diag(headers[:600])

# ---- openssl s_client sees the configured certificate -------------------
r = subprocess.run(["openssl", "s_client", "-starttls", "smtp", "-connect",
                    "127.0.0.1:%d" % port, "-CAfile", ca],
                   input=b"", stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
out = r.stdout.decode("utf-8", "replace")
m = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", out, re.S)
seen = hashlib.sha256(ssl.PEM_cert_to_DER_cert(m.group(0))).hexdigest() if m else None
want = fingerprint_of_pem(os.path.join(certs, "server.pem"))
ok(seen == want and "mx.ringmail.test" in out,
   "openssl s_client -starttls smtp: the configured certificate (sha256 %s)" %
   (seen or "none")[:16])
ok("Verify return code: 0 (ok)" in out, "openssl s_client: the chain verifies against the CA")

# ---- a big pipelined transaction under TLS ------------------------------
# 300 RCPTs in one write (their replies overflow the session's 4 KiB output
# buffer: flow control under TLS) and a 2 MB body (many TLS records).
c = TlsClient(port)
greet(c)
code, _ = c.cmd(b"STARTTLS\r\n")
cert = c.start_tls(ca) if code == 220 else None
big_qid = None
body = b"Subject: big\r\n\r\n" + b"".join(b"line %06d " % i + b"x" * 88 + b"\r\n"
                                           for i in range(20000))
if cert:
    c.cmd(b"EHLO big.test\r\n")
    c.send(b"MAIL FROM:<big@src.test>\r\n" +
           b"".join(b"RCPT TO:<r%d@dst.test>\r\n" % i for i in range(300)))
    codes = [c.reply()[0] for _ in range(301)]
    code, _ = c.cmd(b"DATA\r\n")
    c.send(body + b".\r\n")
    dcode, lines = c.reply()
    big_qid = queue_id_of(lines[-1]) if lines else None
    ok(codes == [250] * 301 and code == 354 and dcode == 250 and big_qid is not None,
       "under TLS: 300 pipelined RCPTs and a 2 MB body are queued (%s)" % big_qid)
    c.cmd(b"QUIT\r\n")
else:
    ok(False, "under TLS: the handshake for the big transaction")
c.close()
show = d.spool_show(big_qid) if big_qid else None
ok(show is not None and len(show["recipients"]) == 300 and
   (show["headers"] + "\r\n" + show["body"]).encode().endswith(body),
   "the 2 MB message is stored byte for byte")

# ---- INJ-05: commands pipelined behind STARTTLS -------------------------
c = TlsClient(port)
ok(greet(c), "INJ-05: greeting and EHLO")
c.send(b"STARTTLS\r\nMAIL FROM:<a@b>\r\n")  # one write
code, lines = c.reply()
ok(code == 220 and "2.0.0" in lines[-1], "INJ-05: 220 2.0.0 to STARTTLS (%s)" % lines)
ok(c.pending() == b"", "INJ-05: no reply to the pipelined MAIL in plaintext")
cert = c.start_tls(ca)
ok(cert is not None, "INJ-05: the TLS handshake completes")
code, lines = c.cmd(b"NOOP\r\n") if cert else (0, [])
ok(code in (0, 250) and (code == 0 or lines == ["250 2.0.0 Ok"]),
   "INJ-05: the first reply under TLS answers our NOOP, not the injected MAIL (%s)" % lines)
code, lines = c.cmd(b"RCPT TO:<c@d.test>\r\n") if code == 250 else (0, [])
ok(code in (0, 503), "INJ-05: RCPT gets 503, the MAIL never ran (%d %s)" % (code, lines))
c.close()

c = TlsClient(port)
greet(c)
c.send(b"STARTTLS\r\nEHLO evil.test\r\nMAIL FROM:<a@b.test>\r\n")
code, _ = c.reply()
cert = c.start_tls(ca) if code == 220 else None
code, lines = c.cmd(b"RCPT TO:<c@d.test>\r\n") if cert else (0, [])
ok(cert is not None and code in (0, 503),
   "INJ-05: injected EHLO+MAIL are not executed under TLS: RCPT %d" % code)
c.close()

# ---- require_tls ---------------------------------------------------------
c = TlsClient(req_port)
lines = greet(c)
ok(lines and any("STARTTLS" in l for l in lines), "require_tls: STARTTLS is offered")
code, lines = c.cmd(b"MAIL FROM:<a@src.test>\r\n")
ok(code == 530 and "5.7.0 Must issue a STARTTLS command first" in lines[-1],
   "require_tls: MAIL before STARTTLS gets 530 (%s)" % lines)
code, _ = c.cmd(b"STARTTLS\r\n")
cert = c.start_tls(ca) if code == 220 else None
codes = []
if cert:
    for line in (b"EHLO tls.test\r\n", b"MAIL FROM:<a@src.test>\r\n", b"RCPT TO:<r@dst.test>\r\n",
                 b"DATA\r\n", b"Subject: required\r\n\r\nbody\r\n.\r\n"):
        code, lines = c.cmd(line)
        codes.append(code)
req_qid = queue_id_of(lines[-1]) if cert and lines else None
ok(codes == [250, 250, 250, 354, 250] and req_qid is not None,
   "require_tls: after STARTTLS the message is queued (%s %s)" % (codes, req_qid))
c.cmd(b"QUIT\r\n")
c.close()

# ---- AUTH after TLS ------------------------------------------------------
c = TlsClient(auth_port, source="127.0.0.2")
greet(c)
code, _ = c.cmd(b"MAIL FROM:<a@src.test>\r\n")
code, _ = c.cmd(b"RCPT TO:<far@away.test>\r\n")
ok(500 <= code < 600, "auth listener: from 127.0.0.2 RCPT is refused before AUTH (%d)" % code)
c.cmd(b"RSET\r\n")
code, _ = c.cmd(b"STARTTLS\r\n")
cert = c.start_tls(ca) if code == 220 else None
code, lines = c.cmd(b"EHLO tls.test\r\n") if cert else (0, [])
ok(code == 250 and "250 AUTH PLAIN LOGIN" in lines and not any("STARTTLS" in l for l in lines),
   "after TLS: AUTH PLAIN LOGIN advertised, STARTTLS no more (%s)" % lines[-2:])
code, _ = c.cmd(b"AUTH PLAIN " + base64.b64encode(b"\0alice\0correct horse") + b"\r\n")
ok(code == 235, "AUTH PLAIN under TLS: 235 (%d)" % code)
codes = [c.cmd(x)[0] for x in (b"MAIL FROM:<a@src.test>\r\n", b"RCPT TO:<far@away.test>\r\n",
                               b"DATA\r\n")]
code, lines = c.cmd(b"Subject: auth\r\n\r\nrelayed\r\n.\r\n")
auth_qid = queue_id_of(lines[-1]) if lines else None
ok(codes == [250, 250, 354] and auth_qid is not None,
   "after AUTH under TLS the client relays (%s %s)" % (codes, auth_qid))
show = d.spool_show(auth_qid) if auth_qid else None
ok(show is not None and "with ESMTPSA id" in show["headers"], "Received: says ESMTPSA")
c.close()

# ---- SIGHUP: a new certificate ------------------------------------------
old = TlsClient(port)
greet(old)
code, _ = old.cmd(b"STARTTLS\r\n")
old_cert = old.start_tls(ca) if code == 220 else None
code, _ = old.cmd(b"EHLO old.test\r\n") if old_cert else (0, [])
ok(cn_of(old_cert) == "mx.ringmail.test" and code == 250,
   "a TLS session on the first certificate is open")


def reload_with(cert_name):
    with open(d.conf, "w") as f:
        f.write(conf_text.replace(os.path.join(certs, "server."), os.path.join(certs, cert_name)))
    start = len(d.output())
    d.proc.send_signal(signal.SIGHUP)
    return start, d.wait_line(r"configuration reloaded", timeout=TIMEOUT, start=start)


def new_cert():
    c = TlsClient(port)
    greet(c)
    code, _ = c.cmd(b"STARTTLS\r\n")
    cert = c.start_tls(ca) if code == 220 else None
    c.close()
    return cn_of(cert)


start, line = reload_with("wrong.")
ok(line and line != "EXITED", "SIGHUP: configuration reloaded")
cns = [new_cert() for _ in range(4)]  # both shards see it: several connections
ok(all(cn == "other.invalid" for cn in cns), "after SIGHUP new connections see the new "
   "certificate (%s)" % cns)
codes = [old.cmd(x)[0] for x in (b"MAIL FROM:<a@src.test>\r\n", b"RCPT TO:<o@dst.test>\r\n",
                                 b"DATA\r\n")]
code, lines = old.cmd(b"Subject: old session\r\n\r\nstill here\r\n.\r\n")
old_qid = queue_id_of(lines[-1]) if lines else None
ok(codes == [250, 250, 354] and old_qid is not None,
   "the TLS session opened before SIGHUP keeps working (%s %s)" % (codes, old_qid))
old.cmd(b"QUIT\r\n")
old.close()

start, line = reload_with("missing.")
ok(d.wait_line(r"SIGHUP: listener main: TLS certificate .*missing\.pem.*previous TLS "
               r"certificate stays", timeout=TIMEOUT, start=start) not in (None, "EXITED"),
   "SIGHUP with a missing certificate: one line, the previous certificate stays")
# Each shard keeps the context it had: other.invalid, or mx.ringmail.test on
# a shard that never saw the short-lived intermediate configuration (the
# listener notices a reload at its next accept or once a second).
cns = [new_cert() for _ in range(4)]
ok(all(cn in ("other.invalid", "mx.ringmail.test") for cn in cns),
   "after the failed reload connections still get TLS with a previous certificate (%s)" % cns)

spool = d.spool_ls()
want = [q for q in (qid, big_qid, req_qid, auth_qid, old_qid) if q]
ok(len(want) == 5 and all(q in spool for q in want),
   "every acknowledged message is in the spool (%d of %d)" % (sum(q in spool for q in want), 5))
ok(d.stop(), "SIGTERM: daemon exits 0")

# ---- start-up and configuration errors ----------------------------------
bad = Daemon(root, "tlsbad", listeners={"main": "tls_certificate = %s\ntls_key = %s\n" % (
    os.path.join(d.dir, "no-such-cert.pem"), os.path.join(certs, "server.key"))})
started = bad.start(timeout=60)
rc = bad.proc.wait(timeout=60)
named = [l for l in bad.output() if "no-such-cert.pem" in l]
ok(not started and rc != 0 and len(named) == 1,
   "a missing tls_certificate: one start-up line naming it, exit %d (%s)" %
   (rc, named[:1]))
bad.proc = None

conf = os.path.join(d.dir, "req-only.conf")
with open(conf, "w") as f:
    f.write("[engine]\nspool_dir = %s\n[listener x]\naddress = 127.0.0.1:%d\nrequire_tls = yes\n"
            % (os.path.join(d.dir, "s2"), port))
r = subprocess.run([d.ringmail, "-t", "-c", conf], stdout=subprocess.PIPE,
                   stderr=subprocess.STDOUT, timeout=60)
ok(r.returncode != 0 and b"require_tls needs tls_certificate" in r.stdout,
   "require_tls without a certificate is a configuration error")
done()
