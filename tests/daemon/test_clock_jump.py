#!/usr/bin/python3
"""test_clock_jump.py - SPL-11: the daemon's wall clock stepped while
recipients are deferred (issue 6, docs/RELIABILITY.md).

The daemon runs with RINGMAIL_TEST_CLOCK_FILE (engine/eng_clock.h): an
8-byte little-endian offset in ns added to its wall clock, changed here
with one pwrite while it runs; its monotonic clock is left alone, as with
a real step. The MX is a small SMTP server in this process that answers
451 to every RCPT for the deferred recipients and 250 to the senders (so
DSNs arrive here too), and timestamps every RCPT it sees.

Forward, +5 days with max_queue_lifetime = 5d: the recipient is deferred
before the step and never expires before it; after the step it expires
at its next attempt, once: one Expiration line, one DSN received with
Action: failed, and no RCPT for it afterwards.

Backward, -1 hour with retry_schedule = 1s and max_queue_lifetime = 1d
(the step puts "now" before the messages' reception time): over the next
few seconds every recipient keeps being retried on its 1 s schedule, no
faster (no storm) and not an hour later (no stall), nothing expires and no
DSN is sent. Then, while it is stopped, the clock goes back a day more:
restarted, its journaled retry times lie a day ahead, and recovery clamps
them to the schedule's longest delay (retries resume within seconds).

Both daemons run at the same time. Usage: test_clock_jump.py BUILD_ROOT
"""
import json
import os
import socket
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from daemon_tap import Client, Daemon, build_root, diag, done, ok, wait_for  # noqa: E402

NS = 1000000000
DAY_NS = 86400 * NS
BACK_MESSAGES = 3
BACK_WINDOW_S = 3.0  # observed after the backward step
# Per recipient in the window on a 1 s schedule: about 3. A storm is far
# above the bound; a stall (waiting out the hour) gives 0.
BACK_MIN_ATTEMPTS = 1
BACK_MAX_ATTEMPTS = int(BACK_WINDOW_S) + 3


class Mx:
    """451 to RCPTs of domain `deferred`, 250 to the rest (DSNs)."""

    def __init__(self, deferred):
        self.deferred = deferred
        self.lock = threading.Lock()
        self.rcpts = []      # (monotonic time, address)
        self.messages = []   # (mail from, [rcpts], data)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def attempts(self, address, since=0.0):
        with self.lock:
            return sum(1 for t, a in self.rcpts if a == address and t >= since)

    def received(self):
        with self.lock:
            return list(self.messages)

    def _session(self, conn):
        f = conn.makefile("rb")
        try:
            self._serve(conn, f)
        except OSError:
            pass
        finally:
            f.close()
            conn.close()

    def _serve(self, conn, f):
        conn.sendall(b"220 mx.test ESMTP\r\n")
        sender, accepted = "", []
        while True:
            line = f.readline()
            if not line:
                return
            cmd = line.decode("utf-8", "replace").strip()
            verb = cmd[:4].upper()
            if verb in ("EHLO", "HELO"):
                conn.sendall(b"250-mx.test\r\n250 ENHANCEDSTATUSCODES\r\n")
            elif verb == "MAIL":
                sender, accepted = cmd[10:].strip().strip("<>"), []
                conn.sendall(b"250 2.1.0 ok\r\n")
            elif verb == "RCPT":
                addr = cmd[8:].strip().strip("<>").lower()
                with self.lock:
                    self.rcpts.append((time.monotonic(), addr))
                if addr.endswith("@" + self.deferred):
                    conn.sendall(b"451 4.3.0 try again later\r\n")
                else:
                    accepted.append(addr)
                    conn.sendall(b"250 2.1.5 ok\r\n")
            elif verb == "DATA":
                if not accepted:
                    conn.sendall(b"554 5.5.1 no valid recipients\r\n")
                    continue
                conn.sendall(b"354 go on\r\n")
                data = []
                while True:
                    dl = f.readline()
                    if not dl or dl == b".\r\n":
                        break
                    data.append(dl)
                with self.lock:
                    self.messages.append((sender, accepted, b"".join(data)))
                conn.sendall(b"250 2.0.0 queued\r\n")
            elif verb == "QUIT":
                conn.sendall(b"221 2.0.0 bye\r\n")
                return
            else:  # RSET, NOOP
                conn.sendall(b"250 2.0.0 ok\r\n")

    def close(self):
        self.sock.close()


class Clock:
    """The daemon's wall-clock offset file."""

    def __init__(self, path):
        self.path = path
        with open(path, "wb") as f:
            f.write(struct.pack("<q", 0))

    def step(self, offset_ns):
        fd = os.open(self.path, os.O_WRONLY)
        try:
            os.pwrite(fd, struct.pack("<q", offset_ns), 0)
        finally:
            os.close(fd)


def start(root, name, mx, lifetime):
    d = Daemon(root, name)
    text = ("[engine]\nspool_dir = %s\nshards = 1\nfree_space_reserve = 0\n"
            "segment_size = 16M\njournal_segment_size = 1M\nretry_schedule = 1s\n"
            "retry_jitter = 0\nmax_queue_lifetime = %s\ndelivery_log = %s\n"
            "\n[route all]\ndomains = *\nhosts = 127.0.0.1:%d\n"
            "\n[listener main]\naddress = 127.0.0.1:%d\n"
            % (d.spool, lifetime, os.path.join(d.dir, "delivery.log"), mx.port,
               d.ports["main"]))
    with open(d.conf, "w") as f:
        f.write(text)
    clock = Clock(os.path.join(d.dir, "clock"))
    return d, clock, launch(d, clock)


def launch(d, clock):
    """Start d on clock (only the backward thread restarts, so the
    environment is not shared with another start)."""
    os.environ["RINGMAIL_TEST_CLOCK_FILE"] = clock.path
    try:
        return d.start()
    finally:
        del os.environ["RINGMAIL_TEST_CLOCK_FILE"]


def inject(d, sender, rcpt):
    c = Client(d.ports["main"])
    try:
        steps = [c.reply(), c.cmd(b"EHLO client.test\r\n"),
                 c.cmd(b"MAIL FROM:<%s>\r\n" % sender.encode()),
                 c.cmd(b"RCPT TO:<%s>\r\n" % rcpt.encode()), c.cmd(b"DATA\r\n"),
                 c.cmd(b"Subject: clock\r\nMessage-ID: <%s>\r\n\r\nbody\r\n.\r\n"
                       % rcpt.encode())]
        codes = [s[0] for s in steps]
        c.cmd(b"QUIT\r\n")
        return codes == [220, 250, 250, 250, 354, 250]
    finally:
        c.close()


def log_events(d):
    path = os.path.join(d.dir, "delivery.log")
    events = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                try:
                    events.append(json.loads(line))
                except ValueError:
                    diag("bad log line: %r" % line)
    return events


def count(events, kind, rcpt):
    return sum(1 for e in events if e.get("type") == kind and e.get("recipient") == rcpt)


def forward_setup(root):
    mx = Mx("fwd.test")
    d, clock, started = start(root, "clock-fwd", mx, "5d")
    ok(started, "forward: daemon started with a test clock file")
    rcpt = "r@fwd.test"
    ok(started and inject(d, "s@origin.test", rcpt), "forward: message accepted")
    return mx, d, clock, rcpt


def forward_check(mx, d, clock, rcpt, check, note):
    deferred = wait_for(lambda: mx.attempts(rcpt) >= 2, 30)
    check(deferred, "forward: deferred and retried on its schedule before the step")
    check(not mx.received(), "forward: no DSN before the step")
    clock.step(5 * DAY_NS + 60 * NS)
    step_t = time.monotonic()
    got = wait_for(lambda: len(mx.received()) >= 1, 30)
    check(got, "forward: a DSN arrives after +5 days (%.1f s)" % (time.monotonic() - step_t))
    quiet_from = time.monotonic()
    time.sleep(2.0)  # a second expiry or more retries (1 s apart) would show
    msgs = mx.received()
    check(len(msgs) == 1, "forward: exactly one DSN (%d)" % len(msgs))
    if msgs:
        sender, rcpts, data = msgs[0]
        check(sender == "" and rcpts == ["s@origin.test"] and b"Action: failed" in data
              and rcpt.encode() in data, "forward: the DSN goes to the sender, Action: failed")
    check(mx.attempts(rcpt, quiet_from) == 0, "forward: no attempt after the expiry")
    check(d.stop(), "forward: daemon stops cleanly")
    events = log_events(d)
    check(count(events, "Expiration", rcpt) == 1,
          "forward: one Expiration line (%d)" % count(events, "Expiration", rcpt))
    check(count(events, "TransientFailure", rcpt) >= 2, "forward: TransientFailure lines first")


def backward_setup(root):
    mx = Mx("back.test")
    d, clock, started = start(root, "clock-back", mx, "1d")
    ok(started, "backward: daemon started with a test clock file")
    rcpts = ["r%d@back.test" % i for i in range(BACK_MESSAGES)]
    ok(started and all(inject(d, "s@origin.test", r) for r in rcpts),
       "backward: %d messages accepted" % BACK_MESSAGES)
    return mx, d, clock, rcpts


def backward_check(mx, d, clock, rcpts, check, note):
    check(wait_for(lambda: all(mx.attempts(r) >= 1 for r in rcpts), 30),
          "backward: every recipient deferred before the step")
    clock.step(-3600 * NS)
    step_t = time.monotonic()
    time.sleep(BACK_WINDOW_S)
    counts = [mx.attempts(r, step_t) for r in rcpts]
    note("attempts per recipient in %.0f s after -1 h: %s" % (BACK_WINDOW_S, counts))
    check(all(c <= BACK_MAX_ATTEMPTS for c in counts),
          "backward: no retry storm (<= %d attempts each)" % BACK_MAX_ATTEMPTS)
    check(all(c >= BACK_MIN_ATTEMPTS for c in counts),
          "backward: retries go on, not an hour later (>= %d each)" % BACK_MIN_ATTEMPTS)
    check(not mx.received(), "backward: no DSN")
    check(d.stop(), "backward: daemon stops cleanly")
    events = log_events(d)
    check(sum(count(events, "Expiration", r) for r in rcpts) == 0, "backward: no Expiration")
    # Down, the clock goes back a day more: the journaled retry times now
    # lie a day ahead; recovery waits at most the schedule's longest delay.
    clock.step(-3600 * NS - DAY_NS)
    restart_t = time.monotonic()
    check(launch(d, clock), "backward: daemon restarts a day earlier")
    resumed = wait_for(lambda: all(mx.attempts(r, restart_t) >= 1 for r in rcpts), 30)
    check(resumed, "backward: recovered retries resume at once, not a day later (%.1f s)"
          % (time.monotonic() - restart_t))
    check(d.stop(), "backward: daemon stops cleanly again")
    check(not mx.received(), "backward: still no DSN")


def main():
    root = build_root()
    fwd = forward_setup(root)
    back = backward_setup(root)
    # Both wait at the same time; their results are printed in order after.
    results = {"fwd": [], "back": []}

    def run(fn, args, key):
        out = results[key]
        try:
            fn(*args, lambda c, desc: out.append((bool(c), desc)),
               lambda m: out.append((None, m)))
        except Exception as e:  # reported as a failure, never a hang
            out.append((False, "%s raised %r" % (fn.__name__, e)))
    threads = [threading.Thread(target=run, args=(forward_check, fwd, "fwd")),
               threading.Thread(target=run, args=(backward_check, back, "back"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for key in ("fwd", "back"):
        for cond, desc in results[key]:
            if cond is None:
                diag(desc)
            else:
                ok(cond, desc)
    fwd[0].close()
    back[0].close()
    done()


if __name__ == "__main__":
    main()
