"""daemon_tap.py - shared helpers for the daemon's Python TAP tests.

TAP output (ok/diag, the plan printed at the end), loopback ports picked at
run time, and a Daemon class: build/engine/ringmail started on a generated
configuration with its spool in a temporary folder under the build dir,
synchronised on the lines it prints ("listening on ..."), stopped with
SIGTERM (exit 0 and "stopped" checked) or killed with SIGKILL, and the
spool read back with build/tools/ringmail-spool --json.

Every process started here is killed at exit, even when a test fails.
Imported by test_inject*.py and test_auth.py (sys.path has this folder).
"""
import atexit
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

_count = 0
_failed = 0
_children = []


def ok(cond, desc):
    """One TAP line; returns cond."""
    global _count, _failed
    _count += 1
    if cond:
        print("ok %d - %s" % (_count, desc), flush=True)
    else:
        _failed += 1
        print("not ok %d - %s" % (_count, desc), flush=True)
    return bool(cond)


def diag(msg):
    for line in str(msg).splitlines() or [""]:
        print("# " + line, flush=True)


def done():
    """Print the plan and exit (1 if anything failed)."""
    print("1..%d" % _count, flush=True)
    sys.exit(1 if _failed else 0)


def free_port(host="127.0.0.1"):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_port(host, port, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def wait_for(cond, timeout=30.0, step=0.05):
    """Poll cond() until true or the deadline; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(step)


def _kill_children():
    for p in _children:
        if p.poll() is None:
            p.kill()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass


atexit.register(_kill_children)


def build_root():
    if len(sys.argv) > 1:
        return os.path.abspath(sys.argv[1])
    return os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "build"))


class Daemon:
    """A ringmail daemon on a temporary spool.

    listeners: {name: extra key lines}; each gets a free port on 127.0.0.1
    (self.ports[name]). Delivery goes to a closed loopback port with a
    one-hour retry (and [engine] hold = yes when the daemon has that key),
    so injected messages stay in the spool and the tests can read them back.
    """

    def __init__(self, root, name, listeners=None, engine_extra="", keep=False,
                 segment_size="16M"):
        self.root = root
        self.ringmail = os.path.join(root, "engine", "ringmail")
        self.spool_tool = os.path.join(root, "tools", "ringmail-spool")
        self.dir = tempfile.mkdtemp(prefix="%s-" % name, dir=root)
        self.spool = os.path.join(self.dir, "spool")
        self.conf = os.path.join(self.dir, "ringmail.conf")
        self.keep = keep
        self.proc = None
        self.lines = []
        self.lock = threading.Lock()
        self.ports = {}
        self.sink_port = free_port()  # nothing listens: deliveries are refused
        listeners = listeners if listeners is not None else {"main": ""}
        if self._has_hold():
            engine_extra = "hold = yes\n" + engine_extra
        text = ("[engine]\nspool_dir = %s\nshards = 2\nfree_space_reserve = 0\n"
                "segment_size = %s\njournal_segment_size = 1M\nretry_schedule = 1h\n"
                "delivery_log = %s\n%s\n[route all]\ndomains = *\nhosts = 127.0.0.1:%d\n"
                % (self.spool, segment_size, os.path.join(self.dir, "delivery.log"), engine_extra,
                   self.sink_port))
        for lname, extra in listeners.items():
            port = free_port()
            self.ports[lname] = port
            text += "\n[listener %s]\naddress = 127.0.0.1:%d\n%s\n" % (lname, port, extra)
        with open(self.conf, "w") as f:
            f.write(text)
        atexit.register(self.cleanup)

    def _has_hold(self):
        """Does this ringmail know [engine] hold (accept and store, do not
        deliver)? Then delivery stays out of the way entirely."""
        probe = os.path.join(self.dir, "probe.conf")
        with open(probe, "w") as f:
            f.write("[engine]\nspool_dir = %s\nhold = yes\n" % self.spool)
        r = subprocess.run([self.ringmail, "-t", "-c", probe], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=60)
        os.unlink(probe)
        return r.returncode == 0

    def _reader(self, proc):
        for raw in proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self.lock:
                self.lines.append(line)

    def output(self):
        with self.lock:
            return list(self.lines)

    def wait_line(self, pattern, timeout=60.0, start=0):
        rx = re.compile(pattern)

        def found():
            for line in self.output()[start:]:
                if rx.search(line):
                    return line
            return None
        return wait_for(lambda: found() or (self.proc.poll() is not None and found() is None
                                            and "EXITED"), timeout)

    def start(self, timeout=90.0):
        """Start and wait until every listener is listening. True on success."""
        start_index = len(self.output())
        self.proc = subprocess.Popen([self.ringmail, "-c", self.conf], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, cwd=self.dir)
        _children.append(self.proc)
        threading.Thread(target=self._reader, args=(self.proc,), daemon=True).start()
        want = len(self.ports)

        def ready():
            n = sum(1 for l in self.output()[start_index:] if "ringmail: listening on" in l)
            return n >= want or self.proc.poll() is not None
        wait_for(ready, timeout)
        if self.proc.poll() is not None:
            time.sleep(0.2)
            diag("\n".join(self.output()[start_index:]))
            return False
        return all(wait_port("127.0.0.1", p, 10) for p in self.ports.values())

    def stop(self, timeout=90.0):
        """SIGTERM; True if it exited 0 after printing "stopped"."""
        if self.proc is None:
            return False
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            rc = -9
        time.sleep(0.1)
        said = any("ringmail: stopped" in l for l in self.output())
        if rc != 0 or not said:
            diag("daemon exit %s; last lines:" % rc)
            diag("\n".join(self.output()[-15:]))
        self.proc = None
        return rc == 0 and said

    def kill9(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=30)
            self.proc = None

    def stats_line(self, listener="main"):
        for line in reversed(self.output()):
            if line.startswith("ringmail: listener %s: accepted" % listener):
                return {k: int(v) for k, v in re.findall(r"(\w+) (\d+)", line.split(":", 2)[2])}
        return None

    def spool_json(self, *args):
        r = subprocess.run([self.spool_tool, "-d", self.spool, "--json"] + list(args),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
        if r.returncode != 0:
            diag("ringmail-spool %s: exit %d: %s" % (" ".join(args), r.returncode,
                                                     r.stderr.decode(errors="replace")))
            return None
        return json.loads(r.stdout.decode("utf-8", "replace"))

    def spool_ls(self):
        """{queue_id: message} of the spool (messages, recipients, states)."""
        js = self.spool_json("ls")
        if js is None:
            return {}
        return {m["queue_id"]: m for m in js.get("messages", [])}

    def spool_show(self, queue_id):
        return self.spool_json("show", queue_id)

    def cleanup(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if not self.keep and os.path.isdir(self.dir) and _failed == 0:
            shutil.rmtree(self.dir, ignore_errors=True)


class Client:
    """A raw SMTP client over a socket: send bytes, read whole replies."""

    def __init__(self, port, source="127.0.0.1", timeout=30.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                             source_address=(source, 0))
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data)

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def reply(self):
        """(code, text lines) of the next reply; (0, []) on EOF or timeout."""
        lines = []
        try:
            while True:
                line = self._line()
                lines.append(line.decode("utf-8", "replace"))
                if len(line) < 4 or line[3:4] != b"-":
                    break
        except (EOFError, OSError):
            return (0, lines)
        try:
            return (int(lines[-1][:3]), lines)
        except ValueError:
            return (-1, lines)

    def cmd(self, data):
        self.send(data)
        return self.reply()

    def is_closed(self, timeout=30.0):
        """True if the server closes (after any pending bytes)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
        except ConnectionResetError:
            return True
        except OSError:
            return False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def read_jsonl(path):
    """The complete JSON lines of a file (a delivery log, a sink's record):
    [] while it does not exist; a last line still being written is left out."""
    out = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                if line.endswith("\n"):
                    out.append(json.loads(line))
    return out


def message_id_of(text):
    m = re.search(r"^Message-ID:\s*(\S+)", text, re.I | re.M)
    return m.group(1) if m else None


def queue_id_of(text):
    m = re.search(r"queued as ([0-9a-fA-F]{26})", text)
    return m.group(1).lower() if m else None


def _run(args, timeout=120):
    return subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          timeout=timeout)


def _text_of(r):
    return r.stdout.decode(errors="replace").strip()


def skip_all(reason):
    """The whole test is skipped (TAP plan 1..0) and the process exits."""
    print("1..0 # SKIP %s" % reason, flush=True)
    sys.exit(0)


def skip_unless_loop_mount():
    """Skip the whole test unless it can loop-mount an ext4 image: root and
    losetup, mkfs.ext4, mount, umount on the PATH (LoopFs needs them)."""
    if os.geteuid() != 0:
        skip_all("needs root (loop mount)")
    for tool in ("losetup", "mkfs.ext4", "mount", "umount"):
        if shutil.which(tool) is None:
            skip_all("%s not found" % tool)


class LoopSpoolDaemon(Daemon):
    """Daemon with its spool on a loop mount (LoopFs) and small sizes: one
    shard, segment_size bytes per segment, reserve bytes of
    free_space_reserve, 64k journal segments, listener "main" with 256k
    messages and 10 recipients; delivery held (or refused: the route goes
    to a closed port) and retried after an hour."""

    def __init__(self, root, name, spool, reserve, segment_size):
        Daemon.__init__(self, root, name)
        self.spool = spool
        self.ports = {"main": free_port()}
        hold = "hold = yes\n" if self._has_hold() else ""
        text = ("[engine]\nspool_dir = %s\nshards = 1\n%sfree_space_reserve = %d\n"
                "segment_size = %d\njournal_segment_size = 64k\nretry_schedule = 1h\n"
                "delivery_log = %s\n\n[route all]\ndomains = *\nhosts = 127.0.0.1:%d\n\n"
                "[listener main]\naddress = 127.0.0.1:%d\nmessage_size_limit = 256k\n"
                "recipients_max = 10\n"
                % (spool, hold, reserve, segment_size, os.path.join(self.dir, "delivery.log"),
                   self.sink_port, self.ports["main"]))
        with open(self.conf, "w") as f:
            f.write(text)


def spool_settled(spool):
    """The start-up preparations are done: in each log folder (messages,
    journal) no .prep file and at least 3 segments ready or active (the
    pool of 2 ready plus the one to become active)."""
    logs = 0
    for _, _, files in os.walk(spool):
        segs = [n for n in files if n.endswith((".ready", ".seg", ".prep"))]
        if not segs:
            continue
        if any(n.endswith(".prep") for n in segs) or len(segs) < 3:
            return False
        logs += 1
    return logs >= 2


class LoopFs:
    """A filesystem image of `kind` (ext4 or xfs), size_mib MiB, loop-mounted
    at self.mnt under a new directory in parent (root only: the tests that
    use it skip with the reason setup() returns). cleanup() is idempotent."""

    MiB = 1 << 20
    # ext4 -m 0: no blocks reserved for root, so statvfs's f_bavail (what
    # the spool reads) is the whole free space df shows.
    MKFS = {"ext4": ["mkfs.ext4", "-q", "-F", "-b", "4096", "-m", "0",
                     "-E", "lazy_itable_init=0,lazy_journal_init=0"],
            "xfs": ["mkfs.xfs", "-q", "-f"]}

    def __init__(self, parent, kind, size_mib):
        self.kind = kind
        self.size_mib = size_mib
        self.dir = tempfile.mkdtemp(prefix="loopfs-%s-" % kind, dir=parent)
        self.image = os.path.join(self.dir, "image")
        self.mnt = os.path.join(self.dir, "mnt")
        self.dev = None
        self.mounted = False

    def setup(self, options=None):
        """None on success, else why it cannot run here (skip)."""
        os.mkdir(self.mnt)
        with open(self.image, "wb") as f:
            f.truncate(self.size_mib * self.MiB)
        r = _run(self.MKFS[self.kind] + [self.image])
        if r.returncode != 0:
            return "mkfs %s failed: %s" % (self.kind, _text_of(r))
        for _ in range(5):  # a test running beside may race for the same free device
            r = _run(["losetup", "--find", "--show", self.image])
            if r.returncode == 0:
                break
            time.sleep(0.2)
        if r.returncode != 0:
            return "no loop device: %s" % _text_of(r)
        self.dev = r.stdout.decode().strip()
        return self.mount(options)

    def mount(self, options=None):
        args = ["mount", "-t", self.kind] + (["-o", options] if options else [])
        r = _run(args + [self.dev, self.mnt])
        if r.returncode != 0:
            return "cannot mount %s (%s): %s" % (self.dev, options, _text_of(r))
        self.mounted = True
        return None

    def remount(self, options):
        r = _run(["mount", "-o", "remount," + options, self.mnt])
        return None if r.returncode == 0 else _text_of(r)

    def mountinfo_line(self):
        with open("/proc/self/mountinfo") as f:
            lines = [l.strip() for l in f if (" %s " % self.mnt) in l]
        return lines[-1] if lines else ""

    def umount(self):
        if self.mounted:
            for args in (["umount", self.mnt], ["umount", "-l", self.mnt]):
                r = _run(args, timeout=60)
                if r.returncode == 0:
                    break
                diag("%s: %s" % (" ".join(args), _text_of(r)))
            self.mounted = False

    def cleanup(self):
        self.umount()
        if self.dev is not None:
            _run(["losetup", "-d", self.dev], timeout=60)
            self.dev = None
        shutil.rmtree(self.dir, ignore_errors=True)
