#!/usr/bin/python3
"""test_disk_full.py - the spool on a real, small, full filesystem (issue 6,
"Disk full for real").

A fresh ext4 image (truncate + mkfs.ext4) is loop-mounted under a temporary
folder in the build dir and holds the spool of one ringmail daemon whose
delivery is held ([engine] hold, or a closed loopback port with a one-hour
retry), so nothing drains. The admission rule under test (docs/config.md,
spool/spool.c): new messages are accepted only while the free space is at
least free_space_reserve + segment_size; the next segment preparation is
held back below the same line, so everything accepted fits in segments
that already exist.

Sizing, from that rule: segment_size 1M (the smallest allowed),
free_space_reserve 16M, a 128 MiB image. Once the daemon has prepared its
segments, a filler file (fallocate) takes the free space down to
reserve + segment_size + 6 segments: about six segment preparations of
head room, measured on the live filesystem rather than predicted, so ext4's
overhead and the engine's start-up preparations cannot make it answer 421
at connect (the failure of an earlier version under ASan).

Checks:
1. injection over one smtplib session, ~96 KiB messages, until refused: the
   refusal is 452 4.3.1 (MAIL or end of DATA), never a crash or a 250 past
   the line, and at that moment the filesystem still has >= the reserve
   free (refused before full); a new connection is refused as well;
2. every message that got a 250 is in the spool (ringmail-spool ls
   --json), and a sample of bodies (the last ones included) is its own
   (show --json); offline at the end, every body;
3. the filler is deleted: injection is accepted again by the same daemon
   process within a deadline, and goes on across several new segments
   (segment preparation resumed by itself);
4. SIGTERM: clean stop; every acknowledged message (both phases) is in the
   spool read back offline.

Needs root, losetup, mkfs.ext4, mount and a loop device: otherwise
"1..0 # SKIP". The filesystem is always unmounted and the loop device
detached (atexit and SIGTERM/SIGINT), even on failure.
Usage: test_disk_full.py BUILD_ROOT
"""
import atexit
import concurrent.futures
import os
import signal
import smtplib
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from daemon_tap import (LoopFs, LoopSpoolDaemon, _run, build_root, diag, done,  # noqa: E402
                        ok, queue_id_of, skip_all, skip_unless_loop_mount, spool_settled, wait_for)

MIB = 1 << 20
IMAGE_MIB = 128
SEGMENT = 1 * MIB           # segment_size: the smallest allowed
# free_space_reserve; RINGMAIL_DISKFULL_RESERVE_MIB=0 turns the check off,
# to see the test fail (the filesystem fills up: no 452, see
# docs/RELIABILITY.md "Disk full").
RESERVE = int(os.environ.get("RINGMAIL_DISKFULL_RESERVE_MIB", "16")) * MIB
THRESHOLD = RESERVE + SEGMENT
HEADROOM = 6 * SEGMENT      # left above THRESHOLD by the filler
SLACK = SEGMENT // 2        # ext4 metadata a segment file may add
BODY_LINES = 96             # x 1000-octet lines: ~96 KB messages, ~10 per segment
INJECT_MAX = 2000           # far beyond what the head room holds
RESUME_MSGS = 60            # after freeing: ~6 segments, more than the ready pool


def free_bytes(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def df(path):
    r = _run(["df", "-B1", path], timeout=30)
    return r.stdout.decode(errors="replace").strip()


# ---- the daemon, with its spool on the loop filesystem ----------------------

# ---- SMTP -------------------------------------------------------------------

def message(tag):
    line = ("%s " % tag).encode() + b"x" * (998 - len(tag) - 1) + b"\r\n"  # 998 + CRLF
    return (b"From: s@src.test\r\nTo: r@dest.test\r\nSubject: " + tag.encode() +
            b"\r\n\r\n" + line * BODY_LINES)


def send_one(client, tag):
    """(code, reply text, stage) of one transaction on an open session;
    code 0 when the connection broke."""
    try:
        return _send_one(client, tag)
    except (OSError, smtplib.SMTPException) as e:
        return 0, "connection lost: %s" % e, "?"


def _send_one(client, tag):
    code, text = client.mail("s@src.test")
    if code != 250:
        return code, text.decode(errors="replace"), "MAIL"
    code, text = client.rcpt("r@dest.test")
    if code != 250:
        client.rset()
        return code, text.decode(errors="replace"), "RCPT"
    try:
        code, text = client.data(message(tag))
    except smtplib.SMTPDataError as e:
        return e.smtp_code, e.smtp_error.decode(errors="replace"), "DATA"
    return code, text.decode(errors="replace"), "end of DATA"


def connect(port):
    """An EHLO'd smtplib session, or (code, text) when the greeting refuses."""
    try:
        c = smtplib.SMTP("127.0.0.1", port, timeout=60)
    except smtplib.SMTPConnectError as e:
        return None, (e.smtp_code, e.smtp_error.decode(errors="replace"))
    except (OSError, smtplib.SMTPException) as e:
        return None, (0, str(e))
    try:
        code, text = c.ehlo("diskfull.test")
    except (OSError, smtplib.SMTPException) as e:
        c.close()
        return None, (0, str(e))
    if code != 250:
        c.close()
        return None, (code, text.decode(errors="replace"))
    return c, None


def quit_quietly(c):
    try:
        c.quit()
    except (OSError, smtplib.SMTPException):
        c.close()


def spool_has(d, acked, sample=None):
    """(missing ids, ids whose body lacks its tag) over {id: tag}: every id
    is looked for in `ls`; bodies are read (`show`, 4 at a time) for all,
    or for `sample` ids spread over the run plus the last ones."""
    ids = d.spool_ls()
    missing = sorted(q for q in acked if q not in ids)
    order = [q for q in acked if q not in missing]  # acknowledgement order
    if sample is not None and len(order) > sample:
        step = len(order) / float(sample // 2)
        order = sorted(set([order[int(i * step)] for i in range(sample // 2)] +
                           order[-(sample - sample // 2):]), key=order.index)

    def body_ok(q):
        js = d.spool_show(q)
        return js is not None and acked[q] in js.get("body", "") and js.get("queue_id") == q
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        good = list(pool.map(body_ok, order))
    wrong = [q for q, g in zip(order, good) if not g]
    return missing, wrong


# ---- the test ---------------------------------------------------------------

def main():
    root = build_root()
    skip_unless_loop_mount()
    fs = LoopFs(root, "ext4", IMAGE_MIB)
    d = None

    def cleanup():
        if d is not None and d.proc is not None and d.proc.poll() is None:
            d.kill9()
        fs.cleanup()
    atexit.register(cleanup)  # after the Daemon's own (LIFO): kill first, then unmount
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda s, f: sys.exit(128 + s))
    why = fs.setup()
    if why is not None:
        fs.cleanup()
        skip_all(why)

    spool = os.path.join(fs.mnt, "spool")
    d = LoopSpoolDaemon(root, "diskfull", spool, RESERVE, SEGMENT)
    if not ok(d.start(), "daemon starts with its spool on a %d MiB ext4 loop mount" % IMAGE_MIB):
        done()
    port = d.ports["main"]
    ok(wait_for(lambda: spool_settled(spool), 120, 0.1),
       "the spool's start-up segment preparations finish")

    # Take the free space down to THRESHOLD + HEADROOM with a filler file.
    free0 = free_bytes(fs.mnt)
    diag("free after start-up: %d bytes (threshold reserve + segment = %d)" % (free0, THRESHOLD))
    if not ok(free0 >= THRESHOLD + HEADROOM + 8 * MIB,
              "the filesystem leaves room for the filler (%d >= %d)"
              % (free0, THRESHOLD + HEADROOM + 8 * MIB)):
        done()
    filler = os.path.join(fs.mnt, "filler")
    filler_size = (free0 - THRESHOLD - HEADROOM) // 4096 * 4096
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.posix_fallocate(fd, 0, filler_size)
    os.fsync(fd)
    os.close(fd)
    free1 = free_bytes(fs.mnt)
    diag("filler %d bytes; free now %d" % (filler_size, free1))
    ok(THRESHOLD + HEADROOM // 2 <= free1 <= THRESHOLD + HEADROOM + MIB,
       "filler leaves about %d MiB above reserve + segment_size (free %d)"
       % (HEADROOM // MIB, free1))

    # 1. Inject until refused.
    acked = {}
    refusal = None
    c, refused = connect(port)
    if not ok(c is not None, "a client connects while there is room (%s)" % (refused,)):
        done()
    for i in range(INJECT_MAX):
        tag = "diskfull-a-%05d" % i
        code, text, stage = send_one(c, tag)
        if code == 250:
            q = queue_id_of(text)
            if q is None:
                refusal = (code, "250 without a queue id: " + text, stage, free_bytes(fs.mnt))
                break
            acked[q] = tag
            continue
        refusal = (code, text, stage, free_bytes(fs.mnt))
        break
    diag("accepted %d messages; refusal: %s" % (len(acked), refusal))
    diag(df(fs.mnt))
    ok(refusal is not None, "injection is refused before %d messages" % INJECT_MAX)
    refusal = refusal or (0, "", "", 0)
    ok(refusal[0] == 452 and "4.3.1" in refusal[1],
       "the refusal is 452 4.3.1 (%d %s at %s)" % refusal[:3])
    ok(len(acked) >= 20, "messages were accepted into the head room first (%d)" % len(acked))
    # The last preparation allowed (free >= reserve + segment) leaves about
    # the reserve free; SLACK covers ext4's metadata for the new file.
    ok(refusal[3] >= RESERVE - SLACK,
       "refused before the filesystem is full: %d bytes free (reserve %d)"
       % (refusal[3], RESERVE))
    ok(refusal[3] < THRESHOLD, "refused at the documented line, not earlier: "
       "%d < reserve + segment_size %d" % (refusal[3], THRESHOLD))
    ok(d.proc.poll() is None, "the daemon is still running")
    again = send_one(c, "diskfull-a-again")
    ok(again[0] == 452, "the same session is refused again (%d %s)" % again[:2])
    quit_quietly(c)
    c2, greet = connect(port)
    if c2 is not None:
        code, text, stage = send_one(c2, "diskfull-a-newconn")
        quit_quietly(c2)
    else:
        code, text, stage = greet[0], greet[1], "greeting"
    ok(code in (421, 452) and "4.3.1" in text,
       "a new connection is refused too (%d %s at %s)" % (code, text, stage))

    # 2. Everything acknowledged is in the spool, each with its own body.
    missing, wrong = spool_has(d, acked, sample=16)
    ok(not missing and not wrong, "all %d acknowledged messages are in the spool, 16 bodies "
       "checked, the last ones included (missing %d, wrong %d)"
       % (len(acked), len(missing), len(wrong)))
    if missing or wrong:
        diag("missing %s wrong %s" % (missing[:5], wrong[:5]))

    # 3. Free the space: accepted again by the same process, within a deadline.
    pid = d.proc.pid
    os.unlink(filler)
    os.sync()
    diag("filler deleted; free %d" % free_bytes(fs.mnt))
    resumed = {}

    def try_once():
        cc, _ = connect(port)
        if cc is None:
            return False
        code, text, _ = send_one(cc, "diskfull-b-first")
        quit_quietly(cc)
        q = queue_id_of(text) if code == 250 else None
        if q is not None:
            resumed[q] = "diskfull-b-first"
        return q is not None
    t0 = time.monotonic()
    back = wait_for(try_once, 120, 0.2)
    ok(back, "injection is accepted again after freeing space (%.1f s)" % (time.monotonic() - t0))
    ok(d.proc.poll() is None and d.proc.pid == pid, "without restarting the daemon")
    c, refused = connect(port)
    codes = []
    if c is not None:
        for i in range(RESUME_MSGS):
            tag = "diskfull-b-%05d" % i
            code, text, _ = send_one(c, tag)
            codes.append(code)
            q = queue_id_of(text) if code == 250 else None
            if q is not None:
                resumed[q] = tag
        quit_quietly(c)
    ok(len(codes) == RESUME_MSGS and all(x == 250 for x in codes),
       "%d more messages (~%d segments) accepted: segment preparation resumed (%s)"
       % (RESUME_MSGS, RESUME_MSGS * BODY_LINES * 1000 // SEGMENT,
          sorted(set(codes)) if codes else refused))

    # 4. Clean stop; everything acknowledged is on disk.
    ok(d.stop(), "SIGTERM: clean stop")
    everything = dict(acked)
    everything.update(resumed)
    missing, wrong = spool_has(d, everything)
    ok(not missing and not wrong and len(everything) == len(acked) + len(resumed),
       "offline: all %d acknowledged messages in the spool with their bodies "
       "(missing %d, wrong %d)" % (len(everything), len(missing), len(wrong)))
    verify = _run([d.spool_tool, "-d", spool, "verify"], timeout=300)
    ok(verify.returncode == 0, "ringmail-spool verify: exit %d" % verify.returncode)
    if verify.returncode != 0:
        diag(verify.stdout.decode(errors="replace")[-2000:])
    done()


if __name__ == "__main__":
    main()
