#!/usr/bin/python3
"""test_spl_engine.py - SPL-07 and SPL-09 with the real daemon and kill -9
(reliability.md §8.4; the in-process SPL suite is tests/spool/test_spl.c).

Two scripted SMTP servers run in this process on loopback: the MX of
dest.test (RCPTs whose local part starts with "bad" get 550 5.1.1, the
rest 250) and the sender's MX for src.test, where the DSNs arrive. Both
record every message at the final dot BEFORE they answer it. A server can
be armed once with a crash point: at the final dot or at a "bad" RCPT it
either SIGSTOPs the daemon first and answers afterwards (the daemon can
never see the reply), or answers and then lets the test kill the daemon
after a random delay. The test then SIGKILLs the daemon and restarts it on
the same spool.

SPL-07, crash between the remote 250 and the journal's DONE record: one
message to two recipients; the MX stops the daemon at the final dot, then
answers 250. After the restart the message is delivered again (the
recovery hands both recipients back: "2 recipients to deliver"), so the
MX holds exactly 2 copies: nothing lost, one duplicate per recipient per
crash, counted here. Stopped and restarted once more: 0 recipients to
deliver, and no third copy.

SPL-09, crash while a DSN is generated for a permanently failed recipient:
rounds of one message each to ok-N and bad-N; the crash point is (a) the
daemon stopped at the 550 of bad-N, (b) stopped at the final dot of the
DSN's own delivery to the sender's MX, (c) killed 0-40 ms (seeded) after
the 550 went out, landing before, during or after the DSN is stored and
the bounce journaled. After each restart: the DSN for bad-N reaches the
sender's MX (at least once); the delivery log has bad-N's Bounce, or (the
line is written after the journal write is reaped, so a kill can take it)
bad-N is final in the spool, counted as a lost line; then the round waits
until the live spool has nothing pending, so each crash can only add
duplicates to its own round. At the end, offline: every bad-N is bounced in the spool and nothing at all
is pending or deferred (no recipient in limbo, DSNs included); per
recipient at most 1 + 1 DSN (one crash each) and the duplicates are
printed; one more restart recovers 0 recipients and sends nothing more.

RINGMAIL_SPL_ENGINE_SEED replays the random delays (printed);
RINGMAIL_SPL_ENGINE_ROUNDS sets the number of random rounds (default 3).
Usage: test_spl_engine.py BUILD_ROOT
"""
import json
import os
import random
import re
import signal
import smtplib
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from daemon_tap import (Daemon, build_root, diag, done, free_port, ok,  # noqa: E402
                        queue_id_of, wait_for)

seed = int(os.environ.get("RINGMAIL_SPL_ENGINE_SEED",
                          str(random.SystemRandom().randrange(1 << 32))))
random_rounds = int(os.environ.get("RINGMAIL_SPL_ENGINE_ROUNDS", "3"))
diag("seed %d (RINGMAIL_SPL_ENGINE_SEED=%d to replay), %d random rounds"
     % (seed, seed, random_rounds))
rng = random.Random(seed)
LOST_LOG_LINES = []  # Bounce lines a kill -9 took (the outcome itself journaled)


class ScriptedMx:
    """A threaded SMTP server on 127.0.0.1 that records messages and can
    be armed with one crash point ("dot" or "rcpt"; "stop" or "after")."""

    def __init__(self, name):
        self.name = name
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self.messages = []   # (rcpts, body text), in arrival order
        self.arm = None      # (point, mode, pid)
        self.fired = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def arm_once(self, point, mode, pid):
        with self.lock:
            self.fired.clear()
            self.arm = (point, mode, pid)

    def disarm(self):
        with self.lock:
            self.arm = None

    def bodies(self):
        with self.lock:
            return [b for _, b in self.messages]

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _trigger(self, point):
        """Before the reply: SIGSTOP if armed so; returns the armed mode."""
        with self.lock:
            a = self.arm
            if a is None or a[0] != point:
                return None
            self.arm = None
        if a[1] == "stop":
            os.kill(a[2], signal.SIGSTOP)
            self.fired.set()
        return a[1]

    def _session(self, conn):
        f = conn.makefile("rb")
        try:
            self._dialogue(conn, f)
        except (OSError, ValueError):
            pass
        finally:
            f.close()
            conn.close()

    def _dialogue(self, conn, f):
        conn.sendall(b"220 %s ESMTP\r\n" % self.name.encode())
        rcpts = []
        for _ in range(100000):
            line = f.readline(4096)
            if not line:
                return
            cmd = line.decode("utf-8", "replace").rstrip("\r\n")
            verb = cmd[:4].upper()
            mode = None
            if verb in ("EHLO", "HELO"):
                reply = b"250-%s\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES" \
                    % self.name.encode()
            elif verb == "MAIL":
                rcpts, reply = [], b"250 2.1.0 ok"
            elif verb == "RCPT":
                m = re.search(r"<([^>]*)>", cmd)
                addr = m.group(1).lower() if m else ""
                if addr.startswith("bad"):
                    mode = self._trigger("rcpt")
                    reply = b"550 5.1.1 <" + addr.encode() + b">: no such user"
                else:
                    rcpts.append(addr)
                    reply = b"250 2.1.5 ok"
            elif verb == "DATA" and not rcpts:
                reply = b"554 5.5.1 no valid recipients"
            elif verb == "DATA":
                conn.sendall(b"354 go ahead\r\n")
                body = self._read_body(f)
                if body is None:
                    return
                with self.lock:
                    self.messages.append((list(rcpts), body))
                mode = self._trigger("dot")
                rcpts, reply = [], b"250 2.0.0 queued"
            elif verb in ("RSET", "NOOP"):
                rcpts, reply = ([] if verb == "RSET" else rcpts), b"250 2.0.0 ok"
            elif verb == "QUIT":
                conn.sendall(b"221 2.0.0 bye\r\n")
                return
            else:
                reply = b"502 5.5.2 unknown command"
            conn.sendall(reply + b"\r\n")
            if mode == "after":
                self.fired.set()

    @staticmethod
    def _read_body(f):
        out = []
        for _ in range(1000000):
            chunk = f.readline(65536)
            if not chunk:
                return None
            if chunk == b".\r\n":
                return b"".join(out).decode("utf-8", "replace")
            out.append(chunk[1:] if chunk.startswith(b".") else chunk)
        return None


class SplDaemon(Daemon):
    """One shard, delivering dest.test to the MX and src.test (the DSNs)
    to the sender's MX; retry after 1 s."""

    def __init__(self, root, mx_port, sender_port):
        Daemon.__init__(self, root, "spl-engine")
        self.ports = {"main": free_port()}
        self.log = os.path.join(self.dir, "delivery.log")
        with open(self.conf, "w") as f:
            f.write("[engine]\nspool_dir = %s\nshards = 1\nfree_space_reserve = 0\n"
                    "segment_size = 1M\njournal_segment_size = 64k\nretry_schedule = 1s\n"
                    "retry_jitter = 0\ndelivery_log = %s\n\n"
                    "[route dest]\ndomains = dest.test\nhosts = 127.0.0.1:%d\n\n"
                    "[route src]\ndomains = src.test\nhosts = 127.0.0.1:%d\n\n"
                    "[listener main]\naddress = 127.0.0.1:%d\nmessage_size_limit = 256k\n"
                    "recipients_max = 10\n"
                    % (self.spool, self.log, mx_port, sender_port, self.ports["main"]))

    def pid(self):
        return self.proc.pid

    def recovered_recipients(self, start):
        """'N recipients to deliver' of the last start-up line after start."""
        for line in reversed(self.output()[start:]):
            m = re.search(r"ringmail: started .* (\d+) recipients to deliver", line)
            if m:
                return int(m.group(1))
        return None

    def log_types(self, rcpt):
        types = []
        if not os.path.exists(self.log):
            return types
        with open(self.log, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    e = json.loads(line)
                except ValueError:
                    continue  # a line torn by kill -9
                if str(e.get("recipient", "")).lower() == rcpt:
                    types.append(e.get("type"))
        return types

    def live_recipients(self):
        """(queue id, address, state) of every non-final recipient (offline)."""
        return [(q, r["address"], r["state"]) for q, m in self.spool_ls().items()
                for r in m.get("recipients", [])
                if r["state"] not in ("delivered", "bounced", "expired")]

    def states_of(self, addr):
        return [r["state"] for m in self.spool_ls().values() for r in m.get("recipients", [])
                if r["address"].lower() == addr]


def inject(port, rcpts, tag):
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as c:
        msg = ("From: s@src.test\r\nTo: %s\r\nSubject: %s\r\n\r\n%s body\r\n"
               % (", ".join(rcpts), tag, tag)).encode()
        c.ehlo("spl.test")
        code, text = c.mail("s@src.test")
        for r in rcpts:
            if code == 250:
                code, text = c.rcpt(r)
        if code == 250:
            code, text = c.data(msg)
        return queue_id_of(text.decode(errors="replace")) if code == 250 else None


def crash_and_restart(d, label):
    """SIGKILL (a stopped daemon too) and start again; returns the output
    index of the new start, or None."""
    d.kill9()
    start = len(d.output())
    if not ok(d.start(), "%s: the daemon restarts on the same spool" % label):
        return None
    return start


def spl07(d, mx):
    tag = "spl07-message"
    rcpts = ["ok1-spl07@dest.test", "ok2-spl07@dest.test"]
    copies = lambda: sum(1 for b in mx.bodies() if tag in b)  # noqa: E731
    mx.arm_once("dot", "stop", d.pid())
    q = inject(d.ports["main"], rcpts, tag)
    ok(q is not None, "SPL-07: message to 2 recipients acknowledged (%s)" % q)
    if not ok(mx.fired.wait(60), "SPL-07: the MX stopped the daemon at the final dot"):
        return
    ok(copies() == 1, "SPL-07: the MX holds the message once when the daemon dies")
    start = crash_and_restart(d, "SPL-07")
    if start is None:
        return
    ok(d.recovered_recipients(start) == 2,
       "SPL-07: recovery hands both recipients back (no DONE was journaled): %s"
       % d.recovered_recipients(start))
    ok(wait_for(lambda: copies() >= 2, 60), "SPL-07: the message is delivered again")
    ok(wait_for(lambda: all("Delivery" in d.log_types(r) for r in rcpts), 30),
       "SPL-07: the delivery log has a Delivery for each recipient")
    ok(d.stop(), "SPL-07: clean stop after the re-delivery")
    left = d.spool_ls().get(q, {}).get("recipients", [])
    ok(all(r["state"] == "delivered" for r in left),
       "SPL-07: both recipients final in the spool, nothing pending (%s; [] = reclaimed)"
       % [r["state"] for r in left])
    start = len(d.output())
    if not ok(d.start(), "SPL-07: started once more"):
        return
    ok(d.recovered_recipients(start) == 0,
       "SPL-07: 0 recipients to deliver after the second delivery (%s)"
       % d.recovered_recipients(start))
    n = copies()
    ok(n == 2, "SPL-07: exactly 2 copies at the MX: 0 lost, 1 duplicate per recipient for "
       "1 crash (copies %d)" % n)
    diag("SPL-07 duplicates: %d message, %d recipient deliveries" % (n - 1, (n - 1) * len(rcpts)))


def spl09_round(d, mx, sender, index, point):
    """One round (below), then wait until the spool has nothing live, so
    no work of this round is in flight at the next round's crash: each
    crash can then add at most one duplicate to its own round."""
    good = spl09_crash(d, mx, sender, index, point)
    settled = wait_for(lambda: not d.live_recipients(), 60, 0.2)
    ok(settled, "SPL-09 round %d: every recipient final before the next crash" % index)
    return good and settled


def spl09_crash(d, mx, sender, index, point):
    """One message to ok-N and bad-N, one crash at `point`; True when
    bad-N's DSN and Bounce are there after the restart."""
    label = "SPL-09 round %d (%s)" % (index, point[0])
    bad, good = "bad-%d@dest.test" % index, "ok-%d@dest.test" % index
    kind, server_point, mode = point[0], point[1], point[2]
    server = sender if kind == "dsn-delivery" else mx
    server.arm_once(server_point, mode, d.pid())
    q = inject(d.ports["main"], [good, bad], "spl09-%d" % index)
    ok(q is not None, "%s: message acknowledged" % label)
    if not ok(server.fired.wait(60), "%s: the crash point is reached" % label):
        server.disarm()
        return False
    if mode == "after":
        time.sleep(point[3])
    start = crash_and_restart(d, label)
    if start is None:
        return False
    ok(wait_for(lambda: any(bad in b for b in sender.bodies()), 60),
       "%s: the DSN for %s reached the sender's MX" % (label, bad))
    # The journal is the truth; the log line is written after it, and a
    # kill -9 right after the bounce was journaled can lose that line (no
    # outcome is logged twice). So: the Bounce line, or bad-N final in the
    # spool. When the daemon never saw the 550, the bounce happens after
    # the restart and its line must be there.
    def live():
        return [r for r in d.live_recipients() if r[1].lower() == bad]
    if kind == "at-5xx":
        return ok(wait_for(lambda: "Bounce" in d.log_types(bad), 30),
                  "%s: the delivery log has the Bounce of %s" % (label, bad))
    # Polls the live spool (ringmail-spool ls) until the line or the final
    # state shows; a line written just after the state is given 1 s more.
    wait_for(lambda: "Bounce" in d.log_types(bad) or not live(), 30, 0.2)
    if wait_for(lambda: "Bounce" in d.log_types(bad), 1.0):
        return ok(True, "%s: the delivery log has the Bounce of %s" % (label, bad))
    live = live()
    LOST_LOG_LINES.append(bad)
    diag("%s: no Bounce line for %s (lost at the kill: outcome journaled, line not "
         "yet written); live in the spool: %s" % (label, bad, live))
    return ok(not live, "%s: %s is final in the spool (its Bounce line was lost at the kill)"
              % (label, bad))


def spl09(d, mx, sender):
    points = [("at-5xx", "rcpt", "stop"), ("dsn-delivery", "dot", "stop")]
    for _ in range(random_rounds):
        delay = rng.uniform(0.0, 0.040)
        points.append(("after-5xx+%dms" % round(delay * 1000), "rcpt", "after", delay))
    rounds = len(points)
    for i, point in enumerate(points):
        spl09_round(d, mx, sender, i, point)
    ok(d.stop(), "SPL-09: clean stop")
    live = d.live_recipients()
    ok(not live, "SPL-09: no recipient in limbo: nothing pending or deferred, DSNs included (%s)"
       % live[:5])
    bad_states = {i: d.states_of("bad-%d@dest.test" % i) for i in range(rounds)}
    ok(all(s in ([], ["bounced"]) for s in bad_states.values()),
       "SPL-09: every failed recipient is bounced in the spool or its message reclaimed "
       "(%s; [] = reclaimed)" % bad_states)
    start = len(d.output())
    if ok(d.start(), "SPL-09: started once more"):
        ok(d.recovered_recipients(start) == 0, "SPL-09: 0 recipients to deliver (%s)"
           % d.recovered_recipients(start))
        ok(d.stop(), "SPL-09: clean stop")
    counts = {i: sum(1 for b in sender.bodies() if "bad-%d@dest.test" % i in b)
              for i in range(rounds)}
    ok(all(1 <= c <= 2 for c in counts.values()),
       "SPL-09: at least one DSN per failed recipient, at most one duplicate per crash (%s)"
       % counts)
    goods = {i: sum(1 for b in mx.bodies() if "spl09-%d body" % i in b) for i in range(rounds)}
    ok(all(1 <= c <= 2 for c in goods.values()),
       "SPL-09: the other recipient delivered, at most one duplicate per crash (%s)" % goods)
    diag("SPL-09 duplicates: %d DSNs, %d deliveries of the good recipient, over %d crashes; "
         "Bounce log lines lost at a kill: %d %s"
         % (sum(c - 1 for c in counts.values()), sum(c - 1 for c in goods.values()), rounds,
            len(LOST_LOG_LINES), LOST_LOG_LINES))


def main():
    root = build_root()
    mx = ScriptedMx("mx.dest.test")
    sender = ScriptedMx("mx.src.test")
    d = SplDaemon(root, mx.port, sender.port)
    if not ok(d.start(), "daemon starts (one shard, routes to the two scripted MXs)"):
        done()
    spl07(d, mx)
    if d.proc is None and not ok(d.start(), "daemon started again for SPL-09"):
        done()
    spl09(d, mx, sender)
    done()


if __name__ == "__main__":
    main()
