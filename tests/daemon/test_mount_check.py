#!/usr/bin/python3
"""test_mount_check.py - KRN-06: the spool on real ext4 and xfs, and the
start-up warning when write barriers are off (engine/eng_mount.c).

Small images are made with mkfs (sparse files under the build dir) and
loop-mounted; each holds the spool of a one-shard daemon delivering to
tests/daemon/rec_sink.py on loopback.

1. ext4, default options (barriers on): the daemon starts without the
   durability warning; a few messages injected over SMTP are delivered
   (each body seen by the sink) and the spool has nothing left.
2. The same filesystem remounted with barrier=0 (ext4 shows it as
   "nobarrier" in /proc/self/mountinfo): the daemon prints one warning
   line naming the spool, the option and "durability is not guaranteed",
   and still starts, injects and delivers (a warning, not an exit).
3. xfs (skipped without mkfs.xfs): no warning, O_DIRECT works (the spool's
   start-up probe), messages injected and delivered, clean stop, and
   `ringmail-spool verify` passes. xfs's nobarrier option is gone from
   the kernel since 4.19 (the mount is refused); that is only noted.

Needs root, losetup, mkfs.ext4 and mount: otherwise "1..0 # SKIP". Every
filesystem is unmounted and its loop device detached at exit, on failure
too. Usage: test_mount_check.py BUILD_ROOT
"""
import atexit
import json
import os
import shutil
import signal
import smtplib
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from daemon_tap import (Daemon, LoopFs, _children, _run, _text_of, build_root, diag,  # noqa: E402
                        done, free_port, ok, queue_id_of, skip_all, skip_unless_loop_mount,
                        wait_for)

HERE = os.path.dirname(os.path.abspath(__file__))
MIB = 1 << 20
MESSAGES = 5
WARNING = "durability is not guaranteed"


class Sink:
    """tests/daemon/rec_sink.py: every delivered message is a JSON line."""

    def __init__(self, workdir):
        self.record = os.path.join(workdir, "sink.record")
        self.proc = subprocess.Popen(["/usr/bin/python3", os.path.join(HERE, "rec_sink.py"),
                                      "--port", "0", "--record", self.record, "--stats",
                                      os.path.join(workdir, "sink.stats")],
                                     stdout=subprocess.PIPE)
        _children.append(self.proc)
        line = self.proc.stdout.readline().decode()
        self.port = int(line.split()[1]) if line.startswith("listening") else 0

    def bodies(self):
        if not os.path.exists(self.record):
            return []
        with open(self.record) as f:
            return [json.loads(l)["body"] for l in f if l.endswith("\n")]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)


class MountDaemon(Daemon):
    """daemon_tap.Daemon with one shard, small segments, the spool at
    `spool`, delivering everything to the sink (no hold)."""

    def __init__(self, root, name, spool, sink_port):
        Daemon.__init__(self, root, name)
        self.spool = spool
        self.ports = {"main": free_port()}
        with open(self.conf, "w") as f:
            f.write("[engine]\nspool_dir = %s\nshards = 1\nfree_space_reserve = 0\n"
                    "segment_size = 1M\njournal_segment_size = 64k\nretry_schedule = 1s\n"
                    "delivery_log = %s\n\n[route all]\ndomains = *\nhosts = 127.0.0.1:%d\n\n"
                    "[listener main]\naddress = 127.0.0.1:%d\nmessage_size_limit = 256k\n"
                    "recipients_max = 10\n"
                    % (spool, os.path.join(self.dir, "delivery.log"), sink_port,
                       self.ports["main"]))

    def warnings(self):
        return [l for l in self.output() if WARNING in l]


def inject(port, tags):
    """Send one message per tag; returns the queue ids acknowledged."""
    ids = []
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as c:
        c.ehlo("mount.test")
        for tag in tags:
            msg = ("From: s@src.test\r\nTo: r@dest.test\r\nSubject: %s\r\n\r\n%s body\r\n"
                   % (tag, tag)).encode()
            code, text = c.mail("s@src.test")
            code, text = c.rcpt("r@dest.test") if code == 250 else (code, text)
            code, text = c.data(msg) if code == 250 else (code, text)
            q = queue_id_of(text.decode(errors="replace")) if code == 250 else None
            if q is not None:
                ids.append(q)
    return ids


def run_round(root, name, fs, sink, expect_warning, label):
    """Start a daemon on fs, check the warning, inject and deliver, stop."""
    spool = os.path.join(fs.mnt, "spool")
    d = MountDaemon(root, name, spool, sink.port)
    diag("mountinfo: %s" % fs.mountinfo_line())
    if not ok(d.start(), "%s: the daemon starts" % label):
        return None
    warnings = d.warnings()
    if expect_warning:
        ok(len(warnings) == 1 and "spool %s" % spool in warnings[0] and
           ("nobarrier" in warnings[0] or "barrier=0" in warnings[0]),
           "%s: one start-up warning naming the spool and the option (%s)" % (label, warnings))
    else:
        ok(not warnings, "%s: no durability warning (%s)" % (label, warnings))
    tags = ["krn06-%s-%d" % (name, i) for i in range(MESSAGES)]
    ids = inject(d.ports["main"], tags)
    ok(len(ids) == MESSAGES, "%s: %d messages acknowledged" % (label, len(ids)))

    def delivered():
        bodies = sink.bodies()
        return all(any(t in b for b in bodies) for t in tags)
    ok(wait_for(delivered, 60), "%s: every message reaches the sink" % label)
    ok(d.stop(), "%s: clean stop" % label)
    left = d.spool_ls()
    live = [(q, r["state"]) for q in ids for r in left.get(q, {}).get("recipients", [])
            if r["state"] != "delivered"]
    ok(not live, "%s: every recipient delivered in the spool, none pending (%s)"
       % (label, live))
    return d


def main():
    root = build_root()
    skip_unless_loop_mount()
    filesystems = []

    def cleanup():
        for p in _children:  # the daemons hold the mounts: kill them first
            if p.poll() is None:
                p.kill()
                p.wait(timeout=30)
        for fs in filesystems:
            fs.cleanup()
    atexit.register(cleanup)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda s, f: sys.exit(128 + s))

    ext4 = LoopFs(root, "ext4", 64)
    filesystems.append(ext4)
    why = ext4.setup()
    if why is not None:
        skip_all(why)
    work = tempfile.mkdtemp(prefix="mount-sink-", dir=root)
    sink = Sink(work)
    if not ok(sink.port > 0, "rec_sink listens"):
        done()

    run_round(root, "ext4", ext4, sink, False, "ext4 (barriers on)")
    why = ext4.remount("barrier=0")
    if ok(why is None, "ext4 remounted with barrier=0 (%s)" % why):
        run_round(root, "ext4nb", ext4, sink, True, "ext4 barrier=0")

    if shutil.which("mkfs.xfs") is None:
        diag("mkfs.xfs not found (tools/install-deps installs xfsprogs): xfs part skipped")
        ok(True, "# SKIP xfs: no mkfs.xfs")
    else:
        xfs = LoopFs(root, "xfs", 300)  # mkfs.xfs's smallest filesystem
        filesystems.append(xfs)
        why = xfs.setup()
        if ok(why is None, "xfs image made and mounted (%s)" % why):
            d = run_round(root, "xfs", xfs, sink, False, "xfs")
            if d is not None:
                r = _run([d.spool_tool, "-d", d.spool, "verify"], timeout=120)
                ok(r.returncode == 0, "xfs: ringmail-spool verify passes (exit %d)"
                   % r.returncode)
                if r.returncode != 0:
                    diag(_text_of(r)[-2000:])
            xfs.umount()
            why = xfs.mount("nobarrier")
            diag("xfs -o nobarrier: %s" % (why or "accepted by this kernel"))
            if why is None:
                run_round(root, "xfsnb", xfs, sink, True, "xfs nobarrier")
    sink.stop()
    shutil.rmtree(work, ignore_errors=True)
    done()


if __name__ == "__main__":
    main()
