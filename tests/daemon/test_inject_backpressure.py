#!/usr/bin/python3
"""test_inject_backpressure.py - back-pressure in the middle of a session
(issue 4, "Back-pressure"; reliability.md SPL-/INJ- refusal rules).

The spool sits on a small ext4 image, loop-mounted under the build dir,
with free_space_reserve 8M and segment_size 1M: new messages are refused
below reserve + segment_size of free space. One smtplib session:
1. sends a message: 250 with a queue id;
2. a filler file (fallocate) takes the free space below that line: the
   same session's next MAIL gets 452 4.3.1 (polled: the spool looks at
   statvfs at most every 100 ms) and the session stays usable (NOOP 250);
   a new connection meanwhile gets 421 4.3.1;
3. the filler is deleted: the same session's MAIL is accepted again
   (polled with a deadline) and its message gets 250;
4. both acknowledged messages are in the spool; SIGTERM stops with exit 0.

Needs root, losetup, mkfs.ext4 and mount: otherwise "1..0 # SKIP". The
filesystem is unmounted and the loop device detached at exit, even on
failure. Usage: test_inject_backpressure.py BUILD_ROOT
"""
import atexit
import os
import signal
import smtplib
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from daemon_tap import (Client, LoopFs, LoopSpoolDaemon, build_root, diag, done,  # noqa: E402
                        ok, queue_id_of, skip_all, skip_unless_loop_mount, spool_settled, wait_for)

MIB = 1 << 20
IMAGE_MIB = 48
RESERVE = 8 * MIB
SEGMENT = 1 * MIB
THRESHOLD = RESERVE + SEGMENT


def free_bytes(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def send_message(c, tag):
    """RCPT, DATA on a session whose MAIL was accepted: (code, queue id)."""
    if c.rcpt("r@dest.test")[0] != 250:
        return 0, None
    code, text = c.data(b"From: s@src.test\r\nSubject: " + tag.encode() + b"\r\n\r\n" +
                        tag.encode() + b"\r\n")
    return code, queue_id_of(text.decode(errors="replace")) if code == 250 else None


def mail_until(c, want, timeout):
    """MAIL until its code is `want` (RSET after an unwanted 250), or the
    deadline: (code, text) of the last MAIL."""
    last = [(0, "")]

    def attempt():
        code, text = c.mail("s@src.test")
        last[0] = (code, text.decode(errors="replace"))
        if code == want:
            return True
        if code == 250:
            c.rset()
        return False
    wait_for(attempt, timeout, 0.05)
    return last[0]


skip_unless_loop_mount()

root = build_root()
fs = LoopFs(root, "ext4", IMAGE_MIB)
atexit.register(fs.cleanup)
for signo in (signal.SIGTERM, signal.SIGINT):
    signal.signal(signo, lambda s, f: sys.exit(1))  # atexit unmounts
why = fs.setup()
if why is not None:
    fs.cleanup()
    skip_all(why)

d = LoopSpoolDaemon(root, "backpressure", os.path.join(fs.mnt, "spool"), RESERVE, SEGMENT)
if not ok(d.start(), "daemon starts with its spool on a %d MiB ext4 image" % IMAGE_MIB):
    done()
port = d.ports["main"]
ok(wait_for(lambda: spool_settled(d.spool), 60, 0.1), "start-up segment preparations done")
free0 = free_bytes(fs.mnt)
ok(free0 > THRESHOLD + 8 * MIB, "free space %d is well above reserve + segment (%d)"
   % (free0, THRESHOLD))

acked = []
c = smtplib.SMTP("127.0.0.1", port, timeout=60)
c.ehlo("backpressure.test")
code, text = mail_until(c, 250, 10)
code, q = send_message(c, "before") if code == 250 else (code, None)
ok(code == 250 and q is not None, "a first message: 250 (%d %s)" % (code, q))
acked += [q] if q else []

# Below the line: free space = THRESHOLD - 2 MiB (still above the reserve).
filler = os.path.join(fs.mnt, "filler")
fd = os.open(filler, os.O_CREAT | os.O_WRONLY, 0o600)
os.posix_fallocate(fd, 0, free_bytes(fs.mnt) - (THRESHOLD - 2 * MIB))
os.close(fd)
diag("filler in place: free %d (line %d)" % (free_bytes(fs.mnt), THRESHOLD))
code, text = mail_until(c, 452, 15)
ok(code == 452 and "4.3.1" in text,
   "below reserve + segment_size: the same session's next MAIL gets 452 4.3.1 (%d %s)"
   % (code, text))
ok(c.noop()[0] == 250, "the session stays open (NOOP 250)")
other = Client(port)
code, lines = other.reply()
ok(code == 421 and "4.3.1" in " ".join(lines), "a new connection gets 421 4.3.1 (%s)" % lines)
other.close()

os.unlink(filler)
t0 = time.monotonic()
code, text = mail_until(c, 250, 30)
ok(code == 250, "space freed: the same session's MAIL is accepted again after %.2f s (%d %s)"
   % (time.monotonic() - t0, code, text))
code, q = send_message(c, "after") if code == 250 else (code, None)
ok(code == 250 and q is not None, "and its message gets 250 (%d %s)" % (code, q))
acked += [q] if q else []
c.quit()

spool = d.spool_ls()
ok(len(acked) == 2 and all(q in spool for q in acked),
   "both acknowledged messages are in the spool (%d of %d)" % (
       sum(1 for q in acked if q in spool), len(acked)))
ok(d.stop(), "SIGTERM: daemon exits 0")
done()
