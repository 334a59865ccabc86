#!/usr/bin/python3
"""ringmail-sendmail end to end against a recording aiosmtpd sink (TAP).

  test_sendmail.py BUILD_DIR

Starts tests/tools/sendmail_sink.py (one per reply mode, free loopback
ports) and checks, from what the sink recorded:
  - the message arrives byte-identical once CRLF-converted (lines ".",
    "..", ".x" with -i: dot-stuffing undone by the server gives the
    original), CRLF input stays CRLF;
  - without -i a lone "." ends the input;
  - From/Date/Message-ID added only when missing; -f and -F;
  - -t: To/Cc/Bcc (display names, groups, folded lines) are the envelope,
    the Bcc field is not in the message; -t with no recipient -> 64;
  - long lines are broken to <= 998 octets; empty input; 8-bit -> BODY=8BITMIME;
  - 4xx RCPT or dot -> 75 with the reply on stderr, 5xx RCPT -> 67 and
    nothing sent, 5xx dot -> 65, 421 greeting -> 75, server down -> 75;
  - RINGMAIL_SUBMIT, ignored sendmail options, usage errors -> 64.
Exit 77 (skip) when aiosmtpd is missing.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

BUILD = sys.argv[1]
TOOL = os.path.join(BUILD, "tools", "ringmail-sendmail")
HERE = os.path.dirname(os.path.abspath(__file__))
SINK = os.path.join(HERE, "sendmail_sink.py")
PY = "/usr/bin/python3"

results = []
sinks = {}
work = tempfile.mkdtemp(prefix="sendmail-test-", dir=os.path.join(BUILD, "tests", "tools"))


def check(cond, name, detail=""):
    results.append((bool(cond), name))
    print("%s %d - %s" % ("ok" if cond else "not ok", len(results), name), flush=True)
    if not cond and detail:
        for line in str(detail).splitlines():
            print("# " + line, flush=True)


class Sink:
    def __init__(self, mode):
        self.mode = mode
        self.ready = os.path.join(work, "ready-" + mode)
        self.record = os.path.join(work, "record-" + mode)
        self.seen = 0
        self.proc = subprocess.Popen([PY, SINK, "--ready", self.ready, "--record", self.record,
                                      "--mode", mode])
        deadline = time.monotonic() + 60
        while not os.path.exists(self.ready):
            if self.proc.poll() is not None:
                if self.proc.returncode == 77:
                    print("1..0 # SKIP aiosmtpd missing")
                    cleanup()
                    sys.exit(77)
                raise RuntimeError("sink exited with %d" % self.proc.returncode)
            if time.monotonic() > deadline:
                raise RuntimeError("sink did not start")
            time.sleep(0.05)
        with open(self.ready, encoding="ascii") as ready:
            self.port = int(ready.read().strip())
        self.server = "127.0.0.1:%d" % self.port

    def new_messages(self):
        """Records written since the last call."""
        if not os.path.exists(self.record):
            return []
        with open(self.record, encoding="ascii") as record:
            lines = record.read().splitlines()
        fresh = [json.loads(line) for line in lines[self.seen:]]
        self.seen = len(lines)
        for msg in fresh:
            msg["body"] = bytes.fromhex(msg["body_hex"])
        return fresh


def sink(mode="accept"):
    if mode not in sinks:
        sinks[mode] = Sink(mode)
    return sinks[mode]


def cleanup():
    for s in sinks.values():
        if s.proc.poll() is None:
            s.proc.send_signal(signal.SIGTERM)
            try:
                s.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                s.proc.kill()
                s.proc.wait()
    shutil.rmtree(work, ignore_errors=True)


def run(args, data, server=None, env_extra=None):
    env = dict(os.environ)
    env.pop("RINGMAIL_SUBMIT", None)
    if env_extra:
        env.update(env_extra)
    cmd = [TOOL] + (["--server", server] if server else []) + ["--timeout", "60"] + args
    proc = subprocess.run(cmd, input=data, capture_output=True, env=env, timeout=120)
    return proc.returncode, proc.stderr.decode("utf-8", "replace")


def one_message(s):
    msgs = s.new_messages()
    return msgs[0] if len(msgs) == 1 else None


def header_values(body, name):
    head = body.split(b"\r\n\r\n", 1)[0]
    prefix = name.lower().encode() + b":"
    return [line for line in head.split(b"\r\n") if line.lower().startswith(prefix)]


def test_exact_bytes():
    s = sink()
    original = (b"From: Alice <alice@example.test>\nDate: Mon, 1 Jan 2024 00:00:00 +0000\n"
                b"Message-ID: <fixed@example.test>\nSubject: dots\n\n"
                b"first\n.\n..\n.x\n\nlast line")
    rc, err = run(["-i", "-f", "alice@example.test", "bob@example.test"], original, s.server)
    msg = one_message(s)
    expect = original.replace(b"\n", b"\r\n") + b"\r\n"
    check(rc == 0 and msg is not None and msg["body"] == expect,
          "-i: lines '.', '..', '.x' arrive byte-identical with CRLF, nothing added",
          "rc=%d err=%s msg=%r" % (rc, err, msg and msg["body"]))
    check(msg is not None and msg["from"] == "alice@example.test"
          and msg["rcpts"] == ["bob@example.test"], "-f sets MAIL FROM; argument recipient",
          repr(msg))
    crlf = b"Subject: crlf\r\nFrom: a@example.test\r\nDate: x\r\nMessage-ID: <m@x>\r\n\r\nbody\r\n"
    rc, err = run(["-oi", "bob@example.test"], crlf, s.server)
    msg = one_message(s)
    check(rc == 0 and msg is not None and msg["body"] == crlf, "CRLF input stays CRLF",
          "rc=%d err=%s msg=%r" % (rc, err, msg and msg["body"]))


def test_dot_ends_input():
    s = sink()
    rc, err = run(["bob@example.test"], b"Subject: x\n\nbefore\n.\nafter\n", s.server)
    msg = one_message(s)
    ok = rc == 0 and msg is not None and msg["body"].endswith(b"\r\n\r\nbefore\r\n")
    check(ok and b"after" not in msg["body"], "without -i a lone '.' ends the message",
          "rc=%d err=%s msg=%r" % (rc, err, msg and msg["body"]))


def test_added_headers():
    s = sink()
    rc, err = run(["-f", "<carol@example.test>", "-F", "Carol Q", "-oem", "-odb",
                   "bob@example.test"], b"Subject: hello\n\nbody\n", s.server)
    msg = one_message(s)
    body = msg["body"] if msg else b""
    froms = header_values(body, "From")
    check(rc == 0 and froms == [b'From: "Carol Q" <carol@example.test>'],
          "From added from -f and -F (-oem -odb ignored)", "rc=%d err=%s body=%r" % (rc, err, body))
    check(len(header_values(body, "Date")) == 1 and len(header_values(body, "Message-ID")) == 1,
          "Date and Message-ID added once", repr(body))
    check(body.endswith(b"\r\n\r\nbody\r\n") and body.startswith(b"Subject: hello\r\n"),
          "existing headers and body kept, added headers after them", repr(body))
    rc, err = run(["bob@example.test"], b"no header here\nsecond\n", s.server)
    msg = one_message(s)
    body = msg["body"] if msg else b""
    check(rc == 0 and body.endswith(b"\r\n\r\nno header here\r\nsecond\r\n")
          and len(header_values(body, "From")) == 1,
          "a body without headers gets headers and a separating empty line", repr(body))


def test_extract():
    s = sink()
    message = (b"From: a@example.test\nTo: \"Doe, John\" <john@example.test>,\n"
               b"  mary@example.test (Mary)\nCc: team: x@example.test, y@example.test;\n"
               b"Bcc: hidden@example.test,\n\tsecret@example.test\nSubject: t\n\nbody\n")
    rc, err = run(["-t", "-i", "extra@example.test"], message, s.server)
    msg = one_message(s)
    want = {"john@example.test", "mary@example.test", "x@example.test", "y@example.test",
            "hidden@example.test", "secret@example.test", "extra@example.test"}
    check(rc == 0 and msg is not None and set(msg["rcpts"]) == want and len(msg["rcpts"]) == 7,
          "-t: recipients from To/Cc/Bcc (names, comments, groups, folding) plus arguments",
          "rc=%d err=%s msg=%r" % (rc, err, msg))
    body = msg["body"] if msg else b""
    check(b"Bcc" not in body and b"hidden" not in body and b"secret" not in body
          and b"mary@example.test (Mary)" in body, "-t: the Bcc field is removed, To kept",
          repr(body))
    rc, err = run(["-t"], b"Subject: nobody\n\nbody\n", s.server)
    check(rc == 64 and "no recipients" in err and not s.new_messages(),
          "-t without recipients: exit 64, nothing sent", "rc=%d err=%s" % (rc, err))


def test_long_and_empty():
    s = sink()
    long_line = b"y" * 3000
    rc, err = run(["bob@example.test"], b"Subject: long\n\n" + long_line + b"\n", s.server)
    msg = one_message(s)
    body = msg["body"] if msg else b""
    lines = body.split(b"\r\n")
    check(rc == 0 and max(len(line) for line in lines) <= 998
          and body.split(b"\r\n\r\n", 1)[1].replace(b"\r\n", b"") == long_line,
          "a 3000-byte line is broken into lines of at most 998 bytes", "rc=%d err=%s" % (rc, err))
    rc, err = run(["bob@example.test"], b"", s.server)
    msg = one_message(s)
    body = msg["body"] if msg else b""
    check(rc == 0 and len(header_values(body, "From")) == 1 and b"\r\n\r\n" not in body,
          "empty input: a message of the added headers only", "rc=%d err=%s body=%r" % (rc, err, body))
    rc, err = run(["bob@example.test"], "Subject: caf\u00e9\n\n\u00e9t\u00e9\n".encode(), s.server)
    msg = one_message(s)
    check(rc == 0 and msg is not None and "BODY=8BITMIME" in msg["mail_options"],
          "8-bit message: MAIL FROM asks BODY=8BITMIME", repr(msg))
    rc, err = run(["bob@example.test"], b"Subject: env\n\nx\n", None,
                  {"RINGMAIL_SUBMIT": s.server})
    check(rc == 0 and one_message(s) is not None, "RINGMAIL_SUBMIT names the server",
          "rc=%d err=%s" % (rc, err))



def test_failures():
    s = sink("rcpt-4xx")
    rc, err = run(["bob@example.test"], b"Subject: x\n\nx\n", s.server)
    check(rc == 75 and "450 4.2.0 mailbox busy" in err and len(err.strip().splitlines()) == 1,
          "450 to RCPT: exit 75, the reply printed on one line", "rc=%d err=%s" % (rc, err))
    s = sink("rcpt-5xx")
    rc, err = run(["good@example.test", "bad@example.test"], b"Subject: x\n\nx\n", s.server)
    check(rc == 67 and "550 5.1.1" in err and "bad@example.test" in err and not s.new_messages(),
          "550 to one RCPT: exit 67, reply printed, no message sent", "rc=%d err=%s" % (rc, err))
    s = sink("dot-4xx")
    rc, err = run(["bob@example.test"], b"Subject: x\n\nx\n", s.server)
    check(rc == 75 and "451 4.3.0" in err, "451 to the final dot: exit 75",
          "rc=%d err=%s" % (rc, err))
    s = sink("dot-5xx")
    rc, err = run(["bob@example.test"], b"Subject: x\n\nx\n", s.server)
    check(rc == 65 and "554 5.6.0" in err, "554 to the final dot: exit 65 (non-zero)",
          "rc=%d err=%s" % (rc, err))
    s = sink("greet-421")
    rc, err = run(["bob@example.test"], b"Subject: x\n\nx\n", s.server)
    check(rc == 75 and "421" in err, "421 greeting: exit 75", "rc=%d err=%s" % (rc, err))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        down = "127.0.0.1:%d" % probe.getsockname()[1]
    rc, err = run(["bob@example.test"], b"Subject: x\n\nx\n", down)
    check(rc == 75 and "refused" in err.lower(), "server down: exit 75, connection refused",
          "rc=%d err=%s" % (rc, err))


def test_usage():
    rc, err = run(["-Z", "bob@example.test"], b"x\n", "127.0.0.1:1")
    check(rc == 64 and "unknown option" in err, "unknown option: exit 64", err)
    rc, err = run([], b"x\n", "127.0.0.1:1")
    check(rc == 64 and "no recipients" in err, "no recipient and no -t: exit 64", err)
    rc, err = run(["bob@example.test\r\nDATA"], b"x\n", "127.0.0.1:1")
    check(rc == 64 and "bad recipient" in err, "recipient with CR LF: exit 64", err)
    rc, err = run(["-f", "a@b\r\nRCPT TO:<x@y>", "bob@example.test"], b"x\n", "127.0.0.1:1")
    check(rc == 64 and "bad sender" in err, "sender with CR LF: exit 64", err)
    rc, err = run(["-bp"], b"", "127.0.0.1:1")
    check(rc == 64, "-bp (mailq) is refused: exit 64", err)


def main():
    if not os.access(TOOL, os.X_OK):
        print("1..0 # SKIP %s not built" % TOOL)
        return 77
    try:
        for test in (test_exact_bytes, test_dot_ends_input, test_added_headers, test_extract,
                     test_long_and_empty, test_failures, test_usage):
            try:
                test()
            except Exception as exc:  # a crash in one group fails it, not the run
                check(False, "%s raised %r" % (test.__name__, exc))
    finally:
        cleanup()
    print("1..%d" % len(results))
    return 0 if all(ok for ok, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
