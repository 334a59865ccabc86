#!/usr/bin/python3
"""test_bench_tools.py - ringmail-sink and ringmail-blast end to end (TAP).

    test_bench_tools.py BUILD_DIR {counts|faults|peers|tls}

counts: blast -> sink exact totals, per-domain counts, bytes, sessions,
        per-second sums, --log-ids on both sides (no duplicates, same ids),
        --stats and SIGUSR1, --per-conn reconnects, --threads.
faults: --4xx/--5xx reconciled exactly with blast's own counts and
        deterministic for a seed, --421-over N honoured, --disconnect
        counted as lost, --delay-ms seen in the latency.
peers:  Postfix smtp-source into ringmail-sink, ringmail-blast into
        Postfix smtp-sink, BDAT and DATA edge cases over a raw socket,
        smtplib with a Message-ID into --log-ids.
tls:    ringmail-sink --tls-cert/--tls-key (STARTTLS) with real clients:
        swaks --tls, openssl s_client -starttls smtp (resumption seen by
        the sink and by the client, none with --tls-no-resume), Python
        ssl for a 200 KiB message, commands pipelined behind STARTTLS
        dropped (CVE-2011-0411), a broken handshake counted, no STARTTLS
        without a certificate.

Everything runs on 127.0.0.1 with kernel-chosen ports (-l 127.0.0.1:0;
the sink prints the port) in a temporary folder; every process started is
killed in a finally block. No sleeps as synchronisation: waits poll a
condition with a deadline.
"""
import json
import os
import select
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import time

N = 0
FAILED = 0
PROCS = []


def ok(cond, name, detail=""):
    global N, FAILED
    N += 1
    if cond:
        print(f"ok {N} - {name}")
    else:
        FAILED += 1
        print(f"not ok {N} - {name}")
        if detail:
            for line in str(detail).splitlines():
                print(f"# {line}")
    sys.stdout.flush()
    return cond


def skip(name, why):
    global N
    N += 1
    print(f"ok {N} - {name} # SKIP {why}")


def wait_for(cond, timeout=30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


class Sink:
    """ringmail-sink on 127.0.0.1, port chosen by the kernel."""

    def __init__(self, build, work, *args, name="sink", hosts=("127.0.0.1",)):
        self.json_path = os.path.join(work, f"{name}.json")
        listen = []
        for host in hosts:
            listen += ["-l", f"{host}:0"]
        self.proc = subprocess.Popen(
            [os.path.join(build, "bench", "ringmail-sink"), *listen,
             "--json", self.json_path, *args],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        PROCS.append(self.proc)
        self.lines = []
        self.buf = b""
        self.ports = []
        for _ in hosts:
            line = self.read_line("listening on", 30)
            if line is None:
                raise RuntimeError("ringmail-sink did not start: " + "".join(self.lines))
            self.ports.append(int(line.rsplit(":", 1)[1]))
        self.port = self.ports[0]

    def read_line(self, needle, timeout):
        end = time.monotonic() + timeout
        fd = self.proc.stderr.fileno()
        while True:
            while b"\n" in self.buf:
                line, self.buf = self.buf.split(b"\n", 1)
                text = line.decode(errors="replace")
                self.lines.append(text)
                if needle in text:
                    return text
            if time.monotonic() >= end:
                return None
            ready, _, _ = select.select([fd], [], [], 0.1)
            if not ready:
                continue
            chunk = os.read(fd, 4096)
            if not chunk:
                return None
            self.buf += chunk

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=60)
        with open(self.json_path) as f:
            return rc, json.load(f)


def blast(build, work, port, *args, name="blast"):
    path = os.path.join(work, f"{name}.json")
    proc = subprocess.run(
        [os.path.join(build, "bench", "ringmail-blast"), "-c", f"127.0.0.1:{port}",
         "--json", path, "--quiet", *args],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)
    data = {}
    if os.path.exists(path):
        with open(path) as f:
            data = json.load(f)
    return proc.returncode, data, proc.stderr.decode(errors="replace")


def reconciled(b):
    return b.get("accepted", -1) + b.get("failed_4xx", 0) + b.get("failed_5xx", 0) + \
        b.get("lost", 0) == b.get("sent", -2)


# ---- counts -------------------------------------------------------------

def test_counts(build, work):
    sink_ids = os.path.join(work, "sink.ids")
    blast_ids = os.path.join(work, "blast.ids")
    stats = os.path.join(work, "stats.json")
    sink = Sink(build, work, "--log-ids", sink_ids, "--stats", stats)
    rc, b, err = blast(build, work, sink.port, "-s", "20", "-m", "2000", "--domains", "10",
                       "--run-id", "T1", "--log-ids", blast_ids)
    ok(rc == 0 and b.get("accepted") == 2000, "blast: 2000 of 2000 accepted", err + str(b))
    ok(wait_for(lambda: os.path.exists(stats) and
                json.load(open(stats)).get("messages") == 2000),
       "--stats file shows the 2000 messages")
    sink.proc.send_signal(signal.SIGUSR1)
    line = sink.read_line("messages=", 30)
    ok(line is not None and "messages=2000 " in line, "SIGUSR1 prints the total", line)
    rc, s = sink.stop()
    ok(rc == 0, "sink exits 0 on SIGTERM")
    ok(s["messages"] == 2000 and s["rcpts"] == 2000, "sink counted 2000 messages", s)
    ok(s["bytes"] == b["bytes"], "sink bytes equal blast bytes",
       f"{s['bytes']} != {b['bytes']}")
    ok(s["sessions"] == 20, "20 sessions", s["sessions"])
    sd = {d: v["messages"] for d, v in s["domains"].items()}
    bd = {d: v["accepted"] for d, v in b["domains"].items()}
    ok(sd == bd and len(sd) == 10 and sum(sd.values()) == 2000,
       "per-domain counts equal on both sides (10 domains)", f"{sd}\n{bd}")
    ok(sum(s["per_second"]) == 2000, "per-second counts add up")
    ok(all(v["peak_concurrency"] <= 20 for v in s["domains"].values()) and
       sum(v["peak_concurrency"] > 0 for v in s["domains"].values()) >= 1,
       "peak concurrency recorded")
    ids = open(sink_ids).read().split()
    want = {f"T1-{i}" for i in range(2000)}
    ok(len(ids) == 2000 and set(ids) == want, "sink --log-ids: every id once",
       f"{len(ids)} lines, {len(set(ids))} distinct")
    lines = [l.split() for l in open(blast_ids).read().splitlines()]
    qids = [l[0] for l in lines]
    bids = [l[1] for l in lines if len(l) == 2]
    ok(len(lines) == 2000 and len(set(qids)) == 2000 and set(bids) == want,
       "blast --log-ids: 2000 'queueid blastid' lines, no duplicates")

    sink = Sink(build, work, "--threads", "2", name="sink2")
    rc, b, err = blast(build, work, sink.port, "-s", "7", "-m", "700", "--per-conn", "10",
                       "--threads", "2", "--domains", "3", "--zipf", "1.2",
                       "--size-dist", "300:3,20k:1", name="blast2")
    rc2, s = sink.stop()
    ok(rc == 0 and b.get("accepted") == 700 and s["messages"] == 700,
       "--threads 2 on both sides: 700 of 700", err + str(s.get("messages")))
    # A session that reconnects may find the plan used up by the others:
    # at most one such extra connection per session.
    ok(70 <= s["sessions"] <= 77 and b.get("connections") == s["sessions"],
       "--per-conn 10: about 70 connections for 700 messages",
       f"{s['sessions']} {b.get('connections')}")
    ok(s["bytes"] == b["bytes"], "mixed sizes: bytes equal", f"{s['bytes']} {b['bytes']}")
    sd = {d: v["messages"] for d, v in s["domains"].items()}
    bd = {d: v["accepted"] for d, v in b["domains"].items()}
    ok(sd == bd and sd.get("d0.example", 0) > sd.get("d2.example", 0),
       "Zipf: per-domain counts equal, d0 busiest", f"{sd}\n{bd}")


# ---- faults ----------------------------------------------------------------

def fault_run(build, work, name, sink_args, blast_args):
    sink = Sink(build, work, *sink_args, name=name)
    rc, b, err = blast(build, work, sink.port, *blast_args, name=name + "-blast")
    rc2, s = sink.stop()
    return rc, b, err, s


def test_faults(build, work):
    args = ["--4xx", "10", "--5xx", "5", "--seed", "7"]
    rc, b, err, s = fault_run(build, work, "f1", args,
                              ["-s", "20", "-m", "1000", "--domains", "10"])
    ok(rc == 0 and b.get("sent") == 1000 and reconciled(b),
       "faults: accepted + 4xx + 5xx + lost = sent", err + str(b))
    ok(b["failed_4xx"] == s["rcpt_4xx"] and b["failed_5xx"] == s["rcpt_5xx"] and
       b["accepted"] == s["messages"] and b["lost"] == 0,
       "faults: blast and sink counts reconcile exactly",
       f"blast {b['accepted']}/{b['failed_4xx']}/{b['failed_5xx']} "
       f"sink {s['messages']}/{s['rcpt_4xx']}/{s['rcpt_5xx']}")
    ok(50 <= s["rcpt_4xx"] <= 150 and 20 <= s["rcpt_5xx"] <= 80,
       "faults: about 10% 4xx and 5% 5xx", f"{s['rcpt_4xx']} {s['rcpt_5xx']}")
    dom = sum(v["rcpt_4xx"] + v["rcpt_5xx"] for v in s["domains"].values())
    ok(dom == s["rcpt_4xx"] + s["rcpt_5xx"], "faults: per-domain fault counts add up")
    rc, b2, err, s2 = fault_run(build, work, "f2", args,
                                ["-s", "5", "-m", "1000", "--domains", "10",
                                 "--no-pipelining", "--bdat"])
    ok(rc == 0 and (s2["rcpt_4xx"], s2["rcpt_5xx"], s2["messages"]) ==
       (s["rcpt_4xx"], s["rcpt_5xx"], s["messages"]),
       "faults: same seed, other timing and BDAT: same fates",
       f"{s2['rcpt_4xx']} {s2['rcpt_5xx']} {s2['messages']}")

    rc, b, err, s = fault_run(build, work, "f3", ["--421-over", "3"],
                              ["-s", "10", "-m", "1000", "--domains", "1"])
    d0 = s["domains"].get("d0.example", {})
    ok(rc == 0 and d0.get("peak_concurrency", 99) <= 3 and d0.get("peak_concurrency") == 3,
       "--421-over 3: peak concurrency 3", d0)
    ok(s["421s"] >= 7 and d0.get("421s") == s["421s"] == b.get("421s"),
       "--421-over 3: 421s provoked and counted on both sides", f"{s['421s']} {b.get('421s')}")
    ok(reconciled(b) and b["accepted"] == s["messages"] and b["failed_4xx"] == s["421s"],
       "--421-over 3: every message accounted for", b)

    rc, b, err, s = fault_run(build, work, "f4", ["--disconnect", "5"],
                              ["-s", "10", "-m", "1000", "--domains", "3"])
    ok(rc == 0 and reconciled(b) and s["disconnects"] > 0 and
       b["lost"] == s["disconnects"] and b["accepted"] == s["messages"],
       "--disconnect 5: lost = disconnects, accepted = counted",
       f"lost {b.get('lost')} disc {s['disconnects']} acc {b.get('accepted')} {s['messages']}")

    rc, b, err, s = fault_run(build, work, "f5", ["--delay-ms", "50"],
                              ["-s", "2", "-m", "6"])
    ok(rc == 0 and b.get("accepted") == 6 and b["p50_latency_us"] >= 50000,
       "--delay-ms 50: replies come 50 ms late", b.get("p50_latency_us"))


# ---- peers -----------------------------------------------------------------

def smtp_read(sock, count):
    """count complete replies (lists of lines)."""
    buf = b""
    replies = []
    sock.settimeout(30)
    while len(replies) < count:
        chunk = sock.recv(65536)
        if not chunk:
            break
        buf += chunk
        while b"\r\n" in buf and len(replies) < count:
            lines = []
            rest = buf
            done = False
            while b"\r\n" in rest:
                line, rest = rest.split(b"\r\n", 1)
                lines.append(line.decode())
                if len(line) < 4 or line[3:4] != b"-":
                    done = True
                    break
            if not done:
                break
            buf = rest
            replies.append(lines)
    return replies


def codes(replies):
    return [int(r[-1][:3]) for r in replies]


def raw_session(port):
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    greeting = smtp_read(sock, 1)
    sock.sendall(b"EHLO test\r\n")
    ehlo = smtp_read(sock, 1)
    return sock, greeting, ehlo


def test_raw(build, work):
    ids = os.path.join(work, "raw.ids")
    sink = Sink(build, work, "--log-ids", ids, name="raw")
    sock, greeting, ehlo = raw_session(sink.port)
    text = "\n".join(ehlo[0]) if ehlo else ""
    ok(codes(greeting) == [220] and all(k in text for k in
       ("PIPELINING", "CHUNKING", "8BITMIME", "SIZE", "ENHANCEDSTATUSCODES")),
       "EHLO offers PIPELINING CHUNKING 8BITMIME SIZE ENHANCEDSTATUSCODES", text)
    body1 = b"X-Blast-Id: raw-1\r\n\r\nhello"
    body2 = b"\r\nworld\r\n"
    sock.sendall(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@Bdat.Example>\r\n" +
                 b"BDAT %d\r\n" % len(body1) + body1 + b"BDAT %d LAST\r\n" % len(body2) + body2)
    r = smtp_read(sock, 4)
    ok(codes(r) == [250, 250, 250, 250] and "queued as" in r[3][0],
       "pipelined MAIL RCPT BDAT BDAT LAST: four 250s", r)
    sock.sendall(b"BDAT 7 LAST\r\nabcdefgNOOP\r\n")
    r = smtp_read(sock, 2)
    ok(codes(r) == [503, 250], "BDAT without MAIL: chunk skipped, 503, session goes on", r)
    # DATA: dot-stuffing, a split terminator and smuggling look-alikes.
    sock.sendall(b"MAIL FROM:<a@x>\r\nRCPT TO:<c@data.example>\r\nDATA\r\n")
    r = smtp_read(sock, 3)
    ok(codes(r) == [250, 250, 354], "pipelined MAIL RCPT DATA: 250 250 354", r)
    data = b"Message-ID: <raw-2@x>\r\n\r\n..stuffed\r\nline\n.\nstill\r\n.\r"
    sock.sendall(data)
    sock.sendall(b"\nNOOP\r\n")
    r = smtp_read(sock, 2)
    ok(codes(r) == [250, 250], "DATA ends only at CRLF.CRLF, split over two sends", r)
    sock.sendall(b"QUIT\r\n")
    r = smtp_read(sock, 1)
    ok(codes(r) == [221], "QUIT: 221", r)
    sock.close()
    with smtplib.SMTP("127.0.0.1", sink.port, timeout=30) as client:
        client.sendmail("a@x", ["d@smtplib.example", "e@smtplib.example", "f@other.example"],
                        b"Message-ID: <lib-3@x>\r\nSubject: t\r\n\r\nbody\r\n")
    rc, s = sink.stop()
    dom = s["domains"]
    ok(s["messages"] == 3 and dom.get("bdat.example", {}).get("bytes") == len(body1 + body2),
       "BDAT message counted with its exact size (domain lower-cased)", s)
    ok(dom.get("data.example", {}).get("bytes") == len(data) + 1 - 3,
       "DATA message size: wire bytes before the final dot", dom.get("data.example"))
    ok(dom.get("smtplib.example", {}).get("messages") == 1 and
       dom.get("smtplib.example", {}).get("rcpts") == 2 and
       dom.get("other.example", {}).get("messages") == 1,
       "three recipients in two domains: one message per domain", dom)
    got = open(ids).read().split()
    ok(sorted(got) == sorted(["raw-1", "<raw-2@x>", "<lib-3@x>"]),
       "--log-ids: X-Blast-Id, else Message-ID", got)


def test_listeners(build, work):
    sink = Sink(build, work, "--duration", "60", name="two",
                hosts=("127.0.0.1", "127.0.0.2"))
    exe = os.path.join(build, "bench", "ringmail-blast")
    runs = [subprocess.run([exe, "-c", f"{host}:{port}", "-s", "2", "-m", "100", "--quiet"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
            for host, port in (("127.0.0.1", sink.ports[0]), ("127.0.0.2", sink.ports[1]))]
    rc, s = sink.stop()
    ok(all(r.returncode == 0 for r in runs) and s["messages"] == 200 and s["sessions"] == 4,
       "two -l listeners: 100 messages through each", s.get("messages"))
    sink = Sink(build, work, "--duration", "0.5", name="dur")
    try:
        rc = sink.proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        rc = None
    ok(rc == 0 and json.load(open(sink.json_path))["messages"] == 0,
       "--duration 0.5: exits 0 by itself with its summary")


def test_peers(build, work):
    test_raw(build, work)
    test_listeners(build, work)
    source = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
    pf_sink = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
    if not os.access(source, os.X_OK) or not os.access(pf_sink, os.X_OK):
        for name in ("smtp-source -> ringmail-sink", "smtp-source one message per session",
                     "ringmail-blast -> smtp-sink"):
            skip(name, "Postfix smtp-source/smtp-sink not installed")
        return
    sink = Sink(build, work, name="src")
    p = subprocess.run([source, "-s", "5", "-m", "500", "-l", "2000", "-d",
                        "-t", "u@src.example", f"127.0.0.1:{sink.port}"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)
    ok(p.returncode == 0, "smtp-source ran",
       p.stderr.decode(errors="replace"))
    p2 = subprocess.run([source, "-s", "4", "-m", "100", "-t", "u@one.example",
                         f"127.0.0.1:{sink.port}"],
                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)
    rc, s = sink.stop()
    ok(s["domains"].get("src.example", {}).get("messages") == 500,
       "smtp-source -> ringmail-sink: 500 messages", s)
    ok(p2.returncode == 0 and s["domains"].get("one.example", {}).get("messages") == 100 and
       s["sessions"] == 5 + 100, "smtp-source one message per session: 100 sessions",
       s["sessions"])

    port_sock = socket.socket()
    port_sock.bind(("127.0.0.1", 0))
    port = port_sock.getsockname()[1]
    port_sock.close()
    out_path = os.path.join(work, "smtp-sink.out")
    user = ["-u", "root"] if os.getuid() == 0 else []
    with open(out_path, "wb") as out:
        pf = subprocess.Popen([pf_sink, *user, "-c", f"127.0.0.1:{port}", "1000"],
                              stdout=out, stderr=subprocess.STDOUT)
    PROCS.append(pf)

    def pf_up():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False

    def pf_mesg():
        text = open(out_path, "rb").read().replace(b"\r", b"\n").decode(errors="replace")
        vals = [int(w[5:]) for w in text.split() if w.startswith("mesg=") and w[5:].isdigit()]
        return vals[-1] if vals else 0

    wait_for(pf_up)
    rc, b, err = blast(build, work, port, "-s", "10", "-m", "1000", "--domains", "5",
                       "--per-conn", "100", name="pf")
    ok(rc == 0 and b.get("accepted") == 1000 and reconciled(b) and
       wait_for(lambda: pf_mesg() >= 1000) and pf_mesg() == 1000,
       "ringmail-blast -> smtp-sink: 1000 sent, 1000 counted by smtp-sink",
       f"{err} {b} mesg={pf_mesg()}")
    pf.terminate()
    pf.wait(timeout=30)

# ---- tls -------------------------------------------------------------------

def make_certs(work):
    source = os.environ.get("RINGMAIL_SOURCE_DIR") or os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "..")
    certs = os.path.join(work, "certs")
    subprocess.run(["sh", os.path.join(source, "tests", "lib", "tls_certs.sh"), certs],
                   check=True, timeout=120)
    return certs


def s_client(port, certs, *args):
    """One STARTTLS session with openssl s_client sending one message."""
    script = (b"EHLO client.test\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@openssl.example>\r\n"
              b"DATA\r\nSubject: s_client\r\n\r\nbody\r\n.\r\nQUIT\r\n")
    p = subprocess.run(
        ["openssl", "s_client", "-starttls", "smtp", "-connect", f"127.0.0.1:{port}",
         "-CAfile", os.path.join(certs, "ca.pem"), "-servername", "mx.ringmail.test",
         "-verify_return_error", "-verify_hostname", "mx.ringmail.test", "-ign_eof", *args],
        input=script, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
    return p.returncode, p.stdout.decode(errors="replace")


def tls_wrap(sock, certs):
    import ssl
    context = ssl.create_default_context(cafile=os.path.join(certs, "ca.pem"))
    return context.wrap_socket(sock, server_hostname="mx.ringmail.test")


def test_tls_clients(build, work, certs):
    cert = ["--tls-cert", os.path.join(certs, "server.pem"),
            "--tls-key", os.path.join(certs, "server.key")]
    sink = Sink(build, work, *cert, name="tls")
    sock, greeting, ehlo = raw_session(sink.port)
    ok(ehlo and any("STARTTLS" in line for line in ehlo[0]), "EHLO offers STARTTLS", ehlo)
    # CVE-2011-0411: a command pipelined behind STARTTLS must not be run.
    sock.sendall(b"STARTTLS\r\nNOOP injected\r\n")
    r = smtp_read(sock, 1)
    ok(codes(r) == [220], "STARTTLS: 220", r)
    tls = tls_wrap(sock, certs)
    tls.sendall(b"EHLO again\r\n")
    r = smtp_read(tls, 1)
    ok(codes(r) == [250] and len(r[0]) > 1 and not any("STARTTLS" in x for x in r[0]),
       "after the handshake: the first reply is EHLO's, without STARTTLS (NOOP dropped)", r)
    tls.sendall(b"STARTTLS\r\n")
    ok(codes(smtp_read(tls, 1)) == [503], "STARTTLS inside TLS: 503")
    tls.sendall(b"QUIT\r\n")
    smtp_read(tls, 1)
    tls.close()

    swaks = shutil.which("swaks")
    if swaks:
        p = subprocess.run([swaks, "--server", f"127.0.0.1:{sink.port}", "--tls",
                            "--from", "a@x", "--to", "b@swaks.example"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
        out = p.stdout.decode(errors="replace")
        ok(p.returncode == 0 and "TLS started" in out and "queued as" in out,
           "swaks --tls: TLS started, message queued", out[-2000:])
    else:
        skip("swaks --tls: TLS started, message queued", "swaks not installed")

    sess = os.path.join(work, "s_client.sess")
    rc1, out1 = s_client(sink.port, certs, "-sess_out", sess)
    rc2, out2 = s_client(sink.port, certs, "-sess_in", sess)
    ok(rc1 == 0 and "Verify return code: 0 (ok)" in out1 and "queued as" in out1 and
       "New, TLSv1.3" in out1 and "Session Ticket" in out1,
       "openssl s_client -starttls smtp: verified TLS 1.3, a ticket, queued",
       out1[-2000:])
    ok(rc2 == 0 and "Reused, TLSv1.3" in out2 and "queued as" in out2,
       "openssl s_client with the saved session: resumed", out2[-2000:])

    # NULL, anonymous and RC4 suites are refused (wolfSSL would offer them).
    p = subprocess.run(["openssl", "s_client", "-starttls", "smtp", "-connect",
                        f"127.0.0.1:{sink.port}", "-tls1_2",
                        "-cipher", "eNULL:aNULL:RC4:@SECLEVEL=0"],
                       input=b"QUIT\r\n", stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=120)
    out = p.stdout.decode(errors="replace")
    ok(p.returncode != 0 and "handshake failure" in out,
       "TLS 1.2 client offering only NULL/anon/RC4 suites: refused", out[-1000:])

    with smtplib.SMTP("127.0.0.1", sink.port, timeout=60) as client:
        client.starttls(context=__import__("ssl").create_default_context(
            cafile=os.path.join(certs, "ca.pem")))
        body = b"Subject: big\r\n\r\n" + b"".join(
            b"%07d abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ\r\n" % i
            for i in range(2900))
        client.sendmail("a@x", ["c@big.example"], body)
    # Garbage instead of a ClientHello: counted, the sink goes on.
    sock, greeting, ehlo = raw_session(sink.port)
    sock.sendall(b"STARTTLS\r\n")
    smtp_read(sock, 1)
    sock.sendall(b"EHLO this is not a TLS record at all\r\n" * 4)
    sock.settimeout(30)
    try:
        while sock.recv(4096):
            pass
    except OSError:
        pass
    sock.close()
    rc, s = sink.stop()
    dom = s["domains"]
    ok(rc == 0 and dom.get("big.example", {}).get("bytes") == len(body),
       "smtplib starttls: a 200 KiB message counted with its size",
       dom.get("big.example"))
    expected_full = 4 if swaks else 3  # the refused NULL-suite client is an error
    ok(s["tls_handshakes_full"] == expected_full and s["tls_handshakes_resumed"] == 1,
       "sink counts the full and resumed handshakes",
       {k: v for k, v in s.items() if k.startswith("tls")})
    ok(s["tls_handshake_errors"] == 2,
       "garbage instead of a ClientHello and the NULL-suite client: two handshake errors",
       s["tls_handshake_errors"])


def test_tls(build, work):
    if not shutil.which("openssl"):
        skip("TLS sink", "openssl not installed")
        return
    certs = make_certs(work)
    test_tls_clients(build, work, certs)
    cert = ["--tls-cert", os.path.join(certs, "server.pem"),
            "--tls-key", os.path.join(certs, "server.key")]
    sink = Sink(build, work, *cert, "--tls-no-resume", name="noresume")
    sess = os.path.join(work, "noresume.sess")
    rc1, out1 = s_client(sink.port, certs, "-sess_out", sess)
    # No ticket was sent, so there may be no session to offer.
    rc2, out2 = s_client(sink.port, certs, *(["-sess_in", sess] if os.path.exists(sess) else []))
    rc, s = sink.stop()
    ok(rc1 == 0 and rc2 == 0 and "Reused" not in out2 and "Session Ticket" not in out1 and
       s["tls_handshakes_full"] == 2 and s["tls_handshakes_resumed"] == 0 and
       s["messages"] == 2, "--tls-no-resume: no ticket, every handshake is full",
       out1[-1500:] + out2[-1000:])
    sink = Sink(build, work, name="plain")
    sock, greeting, ehlo = raw_session(sink.port)
    sock.sendall(b"STARTTLS\r\n")
    r = smtp_read(sock, 1)
    ok(not any("STARTTLS" in line for line in ehlo[0]) and codes(r) == [502],
       "without --tls-cert: no STARTTLS offered, STARTTLS is 502", (ehlo, r))
    sock.close()
    sink.stop()
    p = subprocess.run([os.path.join(build, "bench", "ringmail-sink"), "-l", "127.0.0.1:0",
                        "--tls-cert", os.path.join(certs, "server.pem"),
                        "--tls-key", os.path.join(certs, "wrong.key")],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)
    err = p.stderr.decode(errors="replace")
    ok(p.returncode == 1 and "does not match" in err and err.count("\n") == 1,
       "a key that does not match the certificate: one line, exit 1", err)


def main():
    build, mode = sys.argv[1], sys.argv[2]
    for tool in ("ringmail-sink", "ringmail-blast"):
        if not os.access(os.path.join(build, "bench", tool), os.X_OK):
            print(f"1..0 # SKIP {tool} not built")
            return 0
    work = tempfile.mkdtemp(prefix=f"bench-tools-{mode}-", dir=build)
    try:
        {"counts": test_counts, "faults": test_faults, "peers": test_peers,
         "tls": test_tls}[mode](build, work)
    except Exception as exc:  # a crash of the script is a failed test, not a hang
        ok(False, f"{mode}: unexpected exception", repr(exc))
    finally:
        for proc in PROCS:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        shutil.rmtree(work, ignore_errors=True)
    print(f"1..{N}")
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
