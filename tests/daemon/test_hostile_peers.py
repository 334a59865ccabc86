#!/usr/bin/python3
"""test_hostile_peers.py - the daemon against hostile MXs (issue 6, OUT-xx).

One hostile_mx.py (tests/conn) per scenario, each the static route of its
own domain h<N>.test. One message with three recipients per domain is
submitted with ringmail-sendmail into the daemon's listener; then the
delivery log must say, for every recipient, what the MX's replies mean
(the MX records the RCPT order, so each reply is matched to its
recipient):
  D  delivered (one Delivery, no Bounce)
  B  bounced (one Bounce, no Delivery)
  T  deferred only (TransientFailure, no Delivery, no Bounce)
  ?  not bounced (delivered or deferred)
and "nothing sent that should not be": when every RCPT was refused, the
MX received "." alone after its 354, never the body. The daemon must stop
with exit 0 (under ASan: no error report), having survived every peer.

retry_schedule is 1h, so every deferral is exactly the first attempt's.
Usage: test_hostile_peers.py BUILD_ROOT
"""
import json
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import daemon_tap  # noqa: E402
from daemon_tap import Daemon, _children, build_root, diag, done, ok, wait_for  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
MX_SCRIPT = os.path.join(HERE, "..", "conn", "hostile_mx.py")

# (scenario, expected outcome per RCPT index)
SCENARIOS = [
    ("normal", "DDD"),
    ("split-bytes", "DBT"),            # 250, multi-line 550, 451; one byte per send
    ("rcpt-all-5xx", "BBB"),           # OUT-06: and 354 to DATA
    ("421-at-RCPT1", "TTT"),           # OUT-08
    ("421-at-DOT", "TTT"),
    ("dot-hang", "TTT"),               # OUT-09: never answers the dot
    ("close-at-DOT", "TTT"),           # OUT-09: resets after the dot
    ("close-at-MAIL", "TTT"),          # OUT-01: early close
    ("rcpt-long-line", "TTT"),         # OUT-02: 100 KB reply line
    ("extra-after-data", "TTT"),       # OUT-07
    ("rcpt-452-after-2", "DD?"),       # OUT-12
    # A RCPT 5xx is held until the batch's last reply is read in step:
    # the session breaks first, so it may have been another command's.
    ("rcpt-5xx-close-at-DATA", "TTT"), # 550 to RCPT1, then close, no DATA reply
    ("rcpt-5xx-421-at-DATA", "TTT"),   # 550 to RCPT0, then 421 to DATA
]

# Failures before the session is ready (greeting refused or malformed, EHLO
# reply malformed): the destination backs off like after a refused connect
# and every queued recipient gets a TransientFailure; nothing is delivered
# or bounced, and the engine does not reconnect in a loop.
PRE_READY = ["greet-554", "greet-bad-code-change", "ehlo-many-lines"]
PRE_READY_CONNECTIONS_MAX = 20

class Mx:
    def __init__(self, workdir, index, scenario):
        self.scenario = scenario
        self.ready = os.path.join(workdir, "mx%d.ready" % index)
        self.record = os.path.join(workdir, "mx%d.record" % index)
        self.out = open(os.path.join(workdir, "mx%d.out" % index), "wb")
        self.proc = subprocess.Popen(["/usr/bin/python3", MX_SCRIPT, "--scenario", scenario,
                                      "--ready", self.ready, "--record", self.record],
                                     stdout=self.out, stderr=subprocess.STDOUT)
        _children.append(self.proc)
        self.port = None

    def wait_ready(self):
        if not wait_for(lambda: os.path.exists(self.ready) or self.proc.poll() is not None, 60):
            return False
        if not os.path.exists(self.ready):
            return False
        with open(self.ready) as f:
            self.port = int(f.read().strip())
        return True

    def connections(self):
        if not os.path.exists(self.record):
            return []
        with open(self.record) as f:
            return [json.loads(line) for line in f if line.endswith("\n")]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.out.close()


def log_events(path):
    events = {}
    if not os.path.exists(path):
        return events
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.endswith("\n"):
                continue
            e = json.loads(line)
            events.setdefault(e["recipient"], []).append(e["type"])
    return events


def rcpt_order(mx):
    """Recipients in the order the first connection's RCPTs named them."""
    conns = [c for c in mx.connections()
             if any(x.upper().startswith("RCPT") for x in c["commands"])]
    if not conns:
        return []
    out = []
    for c in conns[0]["commands"]:
        if c.upper().startswith("RCPT TO:<"):
            out.append(c[len("RCPT TO:<"):].split(">", 1)[0].lower())
    return out


def judge(kind, types):
    delivered = "Delivery" in types
    bounced = "Bounce" in types
    if kind == "D":
        return types.count("Delivery") == 1 and not bounced
    if kind == "B":
        return types.count("Bounce") == 1 and not delivered
    if kind == "T":
        return "TransientFailure" in types and not delivered and not bounced
    return not bounced and (delivered or "TransientFailure" in types)


def submit(sendmail, server, names, indexes):
    """One message with three recipients per scenario index."""
    submitted = True
    for i in indexes:
        rcpts = ["rcpt%d@h%d.test" % (r, i) for r in range(3)]
        msg = ("Subject: hostile %s\n\nbody line\n.leading dot\n" % names[i]).encode()
        r = subprocess.run([sendmail, "--server", server, "-f", "s@src.test"] + rcpts,
                           input=msg, capture_output=True, timeout=120)
        if r.returncode != 0:
            submitted = False
            diag("%s: ringmail-sendmail exit %d: %s" % (names[i], r.returncode,
                                                         r.stderr.decode()))
    return submitted


def check_scenario(i, name, expect, mx, events):
    order = rcpt_order(mx)
    if len(set(expect[len(order):])) <= 1:
        # The MX stopped before it read every RCPT (close, 421): the rest
        # share one expectation, so their order does not matter.
        order += [a for a in ("rcpt%d@h%d.test" % (r, i) for r in range(3)) if a not in order]
    good = len(order) == 3
    detail = []
    for index, addr in enumerate(order[:3]):
        types = events.get(addr, [])
        detail.append("%s %s" % (addr, types))
        good = good and judge(expect[index], types)
    if not ok(good, "%s: per-recipient outcomes %s" % (name, expect)):
        diag("RCPT order %s; %s" % (order, "; ".join(detail)))


def check_pre_ready(i, name, mx, log):
    addrs = ["rcpt%d@h%d.test" % (r, i) for r in range(3)]

    def deferred():
        ev = log_events(log)
        return all("TransientFailure" in ev.get(a, []) for a in addrs)
    ok(wait_for(lambda: len(mx.connections()) > 0, 60), "%s: the engine connects" % name)
    # Either every recipient is deferred, or the reconnects pile up.
    wait_for(lambda: deferred() or len(mx.connections()) > PRE_READY_CONNECTIONS_MAX, 10)
    events = log_events(log)
    types = [t for a in addrs for t in events.get(a, [])]
    ok("Delivery" not in types and "Bounce" not in types, "%s: nothing delivered or bounced" % name)
    conn_count = len(mx.connections())
    ok(deferred() and conn_count <= PRE_READY_CONNECTIONS_MAX,
       "%s: deferred, reconnects backed off (%d connections)" % (name, conn_count))


def main():
    root = build_root()
    sendmail = os.path.join(root, "tools", "ringmail-sendmail")
    d = Daemon(root, "hostile-peers")
    names = [n for n, _ in SCENARIOS] + PRE_READY
    mxs = [Mx(d.dir, i, name) for i, name in enumerate(names)]
    if not ok(all(mx.wait_ready() for mx in mxs), "%d hostile MXs listen" % len(mxs)):
        return
    with open(d.conf) as f:
        text = f.read()
    with open(d.conf, "w") as f:  # deliver: no hold (daemon_tap holds by default)
        f.write(text.replace("hold = yes\n", ""))
    with open(d.conf, "a") as f:
        for i, mx in enumerate(mxs):
            f.write("\n[route h%d]\ndomains = h%d.test\nhosts = 127.0.0.1:%d\n" % (i, i, mx.port))
            f.write("\n[domain h%d.test]\ndata_done_timeout = 2s\nidle_timeout = 0\n"
                    "max_connections = 1\n" % i)
    if not ok(d.start(), "daemon starts with a route per hostile MX"):
        diag("\n".join(d.output()[-20:]))
        return
    server = "127.0.0.1:%d" % d.ports["main"]
    log = os.path.join(d.dir, "delivery.log")
    ok(submit(sendmail, server, names, range(len(SCENARIOS))),
       "every message accepted by the listener (ringmail-sendmail exit 0)")
    all_rcpts = ["rcpt%d@h%d.test" % (r, i) for i in range(len(SCENARIOS)) for r in range(3)]

    def settled():
        ev = log_events(log)
        return all(any(t in ev.get(a, []) for t in ("Delivery", "Bounce", "TransientFailure"))
                   for a in all_rcpts)
    ok(wait_for(settled, 120), "every recipient has an outcome in the delivery log")
    events = log_events(log)
    for i, (name, expect) in enumerate(SCENARIOS):
        check_scenario(i, name, expect, mxs[i], events)
    # Last, and briefly: these make the engine reconnect in a loop.
    pre_ready = range(len(SCENARIOS), len(names))
    ok(submit(sendmail, server, names, pre_ready), "pre-READY failure messages accepted")
    for i in pre_ready:
        check_pre_ready(i, names[i], mxs[i], log)
    conns = [c for c in mxs[names.index("rcpt-all-5xx")].connections() if c["data_hex"]]
    data = bytes.fromhex(conns[0]["data_hex"]) if conns else None
    ok(data == b".\r\n", "every RCPT refused, 354 to DATA: only '.' sent, no body (%r)" % data)
    ok(d.stop(), "daemon survives every hostile peer and stops with exit 0")
    for mx in mxs:
        mx.stop()


if __name__ == "__main__":
    try:
        main()
    finally:
        done()
