#!/usr/bin/python3
"""A scripted hostile MX for the eng_conn tests (reliability.md 8.2, OUT-xx).

  hostile_mx.py --scenario NAME --ready FILE --record FILE

Plain asyncio, no SMTP library: it writes exactly the bytes a scenario
says, when it says. Listens on 127.0.0.1, port chosen by the kernel,
written to --ready once listening (the test polls for that file). Every
connection, when it ends, appends one JSON line to --record:
  {"conn": N, "scenario": NAME, "received_hex": ..., "data_hex": ...,
   "commands": [...], "end": "eof" | "server-close" | "error"}
received_hex is every byte the client sent; data_hex the bytes it sent
after a 354 up to and including the terminating ".\\r\\n"; commands the
command lines (without CRLF, DATA content excluded).

A well-behaved default dialogue (greeting 220, EHLO with PIPELINING, 250
to MAIL, "250 2.1.5 rcpt<i> ok" to the i-th RCPT of a transaction, 354 to
DATA, 250 to the dot, 221 to QUIT) is changed by the scenario (SCENARIOS
below): a reply replaced by other bytes, by CLOSE (close without a reply)
or by HANG (never answer), extra bytes written together with a reply,
PIPELINING not offered, or every reply written one byte per send.

Exits on SIGTERM, or when the test that started it is gone.
"""
import argparse
import asyncio
import json
import os
import signal
import socket
import sys

CLOSE = "close"
HANG = "hang"
LONG_LINE = b"250 " + b"x" * 100000 + b"\r\n"
MANY_LINES = b"250-line\r\n" * 10000 + b"250 last\r\n"


class Script:
    """What the MX does. replies maps a phase (GREETING, EHLO, MAIL, RCPT,
    RCPT<i>, DATA, DOT, RSET, QUIT) to bytes, CLOSE or HANG; extra maps a
    phase to bytes written in the same send as that phase's reply."""

    def __init__(self):
        self.replies = {}
        self.extra = {}
        self.pipelining = True
        self.byte_split = False

    def reply(self, phase, index=None):
        if index is not None and "RCPT%d" % index in self.replies:
            return self.replies["RCPT%d" % index]
        if phase in self.replies:
            return self.replies[phase]
        return default_reply(phase, index, self.pipelining)


def default_reply(phase, index, pipelining):
    if phase == "GREETING":
        return b"220 mx.test ESMTP hostile\r\n"
    if phase == "EHLO":
        caps = b"250-mx.test\r\n"
        if pipelining:
            caps += b"250-PIPELINING\r\n"
        return caps + b"250-8BITMIME\r\n250 SIZE 10485760\r\n"
    if phase == "HELO":
        return b"250 mx.test\r\n"
    if phase == "MAIL":
        return b"250 2.1.0 sender ok\r\n"
    if phase == "RCPT":
        return b"250 2.1.5 rcpt%d ok\r\n" % index
    if phase == "DATA":
        return b"354 end with <CRLF>.<CRLF>\r\n"
    if phase == "DOT":
        return b"250 2.0.0 queued as HOSTILE\r\n"
    if phase == "RSET":
        return b"250 2.0.0 reset\r\n"
    if phase == "QUIT":
        return b"221 2.0.0 bye\r\n"
    if phase == "NOOP":
        return b"250 2.0.0 ok\r\n"
    return b"500 5.5.2 unknown command\r\n"


def scenario(name):
    """The Script for a scenario name (None when unknown)."""
    s = Script()
    bad_greetings = {
        "greet-bad-short": b"22 x\r\n",
        "greet-bad-long-code": b"2200 x\r\n",
        "greet-bad-separator": b"220_x\r\n",
        "greet-bad-class-0": b"020 x\r\n",
        "greet-bad-class-6": b"620 x\r\n",
        "greet-bad-bare-lf": b"220 x\n",
        "greet-bad-nul": b"220 a\x00b\r\n",
        "greet-bad-code-change": b"220-a\r\n221 b\r\n",
        "greet-bad-nondigit": b"2x0 hello\r\n",
    }
    if name in bad_greetings:
        s.replies["GREETING"] = bad_greetings[name]
    elif name == "greet-554":
        s.replies["GREETING"] = b"554 5.7.1 no service for you\r\n"
    elif name == "greet-421":
        s.replies["GREETING"] = b"421 4.3.2 too busy\r\n"
    elif name == "greet-close":
        s.replies["GREETING"] = CLOSE
    elif name.startswith("close-at-"):  # close-at-EHLO ... close-at-DOT
        s.replies[name[len("close-at-"):]] = CLOSE
    elif name.startswith("421-at-"):  # 421-at-EHLO, -MAIL, -RCPT1, -DATA, -DOT
        s.replies[name[len("421-at-"):]] = b"421 4.3.2 closing now\r\n"
    elif name == "ehlo-code-change":
        s.replies["EHLO"] = b"250-mx.test\r\n251 PIPELINING\r\n"
    elif name == "ehlo-long-line":
        s.replies["EHLO"] = LONG_LINE
    elif name == "ehlo-many-lines":
        s.replies["EHLO"] = MANY_LINES
    elif name == "rcpt-code-change":
        s.replies["RCPT0"] = b"250-2.1.5 first\r\n251 2.1.5 changed\r\n"
    elif name == "rcpt-nondigit":
        s.replies["RCPT1"] = b"25O 2.1.5 letter O\r\n"
    elif name == "rcpt-no-separator":
        s.replies["RCPT1"] = b"250x\r\n"
    elif name == "rcpt-long-line":
        s.replies["RCPT1"] = LONG_LINE
    elif name == "rcpt-many-lines":
        s.replies["RCPT0"] = MANY_LINES
    elif name == "split-bytes":
        s.byte_split = True
        s.replies["RCPT1"] = b"550-5.1.1 rcpt1\r\n550 5.1.1 no such user\r\n"
        s.replies["RCPT2"] = b"451 4.2.1 rcpt2 later\r\n"
    elif name == "extra-after-greeting":
        s.extra["GREETING"] = b"250 2.0.0 unsolicited\r\n"
    elif name == "extra-after-ehlo":
        s.extra["EHLO"] = b"252 2.0.0 unsolicited\r\n"
    elif name == "extra-after-data":
        s.extra["DATA"] = b"252 2.0.0 unsolicited\r\n"
    elif name == "extra-after-dot":
        s.extra["DOT"] = b"252 2.0.0 unsolicited\r\n"
    elif name in ("extra-after-rcpt-lockstep", "extra-after-rcpt"):
        s.pipelining = name == "extra-after-rcpt"
        s.extra["RCPT0"] = b"252 2.1.5 unsolicited\r\n"
    elif name == "dot-hang":
        s.replies["DOT"] = HANG
    elif name in ("rcpt-all-5xx", "rcpt-all-5xx-lockstep"):
        s.pipelining = name == "rcpt-all-5xx"
        s.replies["RCPT"] = b"550 5.1.1 no such user\r\n"
        s.replies["DATA"] = b"354 go ahead anyway\r\n"
    elif name == "rcpt-5xx-close-at-DATA":  # the 550 comes, DATA's reply never does
        s.replies["RCPT1"] = b"550 5.1.1 rcpt1 unknown\r\n"
        s.replies["DATA"] = CLOSE
    elif name == "rcpt-5xx-421-at-DATA":
        s.replies["RCPT0"] = b"550 5.1.1 rcpt0 unknown\r\n"
        s.replies["DATA"] = b"421 4.3.2 closing now\r\n"
    elif name == "rcpt-452-after-2":
        s.replies["RCPT"] = b"452 4.5.3 too many recipients\r\n"
        s.replies["RCPT0"] = b"250 2.1.5 rcpt0 ok\r\n"
        s.replies["RCPT1"] = b"250 2.1.5 rcpt1 ok\r\n"
    elif name == "421-after-done":
        s.extra["DOT"] = b"421 4.3.2 closing after all\r\n"
    elif name == "rcpt-354":
        s.replies["RCPT1"] = b"354 2.1.5 go ahead?\r\n"
    elif name == "data-250":
        s.replies["DATA"] = b"250 2.0.0 no data needed\r\n"
    elif name == "dot-354":
        s.replies["DOT"] = b"354 more please\r\n"
    elif name == "helo-fallback":
        s.replies["EHLO"] = b"502 5.5.2 EHLO not here\r\n"
    elif name == "helo-rejected":
        s.replies["EHLO"] = b"502 5.5.2 EHLO not here\r\n"
        s.replies["HELO"] = b"550 5.7.1 not you\r\n"
    elif name == "rset-5xx":
        s.replies["RSET"] = b"554 5.5.1 no reset for you\r\n"
    elif name == "data-5xx-rset-5xx":  # so the next transaction needs RSET
        s.replies["DATA"] = b"554 5.5.1 no data for you\r\n"
        s.replies["RSET"] = b"554 5.5.1 no reset for you\r\n"
    elif name != "normal":
        return None
    return s


class Session:
    def __init__(self, script, reader, writer):
        self.script = script
        self.reader = reader
        self.writer = writer
        self.received = bytearray()
        self.data = bytearray()
        self.commands = []
        self.rcpt_index = 0

    async def send(self, phase, index=None):
        """Write the phase's reply (and extra). False: stop the session."""
        reply = self.script.reply(phase, index)
        if reply == CLOSE:
            return False
        if reply == HANG:
            self.received += await self.reader.read(-1)  # until the client gives up
            return False
        key = "RCPT%d" % index if index is not None else phase
        out = reply + self.script.extra.get(key, self.script.extra.get(phase, b""))
        if self.script.byte_split:
            for i in range(len(out)):
                self.writer.write(out[i:i + 1])
                await self.writer.drain()
                await asyncio.sleep(0.002)
        else:
            self.writer.write(out)
            await self.writer.drain()
        if reply.startswith(b"421") or phase == "QUIT":
            return False
        return True

    async def read_line(self):
        line = await self.reader.readline()
        self.received += line
        return line

    async def read_data(self):
        """After 354: lines up to and including ".\\r\\n"; False on EOF."""
        while True:
            line = await self.read_line()
            if not line:
                return False
            self.data += line
            if line == b".\r\n":
                return True

    async def command(self, line):
        self.commands.append(line.rstrip(b"\r\n").decode("latin-1"))
        verb = line[:4].upper()
        if verb in (b"EHLO", b"HELO", b"MAIL", b"RSET", b"QUIT", b"NOOP"):
            if verb == b"MAIL":
                self.rcpt_index = 0
            return await self.send(verb.decode())
        if verb == b"RCPT":
            self.rcpt_index += 1
            return await self.send("RCPT", self.rcpt_index - 1)
        if verb == b"DATA":
            reply = self.script.reply("DATA")
            if not await self.send("DATA"):
                return False
            if not reply.startswith(b"354"):
                return True
            if not await self.read_data():
                return False
            return await self.send("DOT")
        return await self.send("OTHER")

    async def run(self):
        if not await self.send("GREETING"):
            return "server-close"
        while True:
            line = await self.read_line()
            if not line:
                return "eof"
            if not await self.command(line):
                return "server-close"


class Server:
    def __init__(self, args, script):
        self.args = args
        self.script = script
        self.conn_count = 0

    async def handle(self, reader, writer):
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.conn_count += 1
        session = Session(self.script, reader, writer)
        try:
            end = await session.run()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ValueError):
            end = "error"
        record = {
            "conn": self.conn_count,
            "scenario": self.args.scenario,
            "received_hex": bytes(session.received).hex(),
            "data_hex": bytes(session.data).hex(),
            "commands": session.commands,
            "end": end,
        }
        with open(self.args.record, "a", encoding="ascii") as out:
            out.write(json.dumps(record) + "\n")
        try:
            writer.close()
            await writer.wait_closed()
        except ConnectionError:
            pass


async def watch_parent(stop):
    parent = os.getppid()
    while not stop.done():
        if os.getppid() != parent:
            stop.set_result(None)
            return
        await asyncio.sleep(0.2)


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--scenario", required=True)
    parser.add_argument("--ready", required=True)
    parser.add_argument("--record", required=True)
    args = parser.parse_args()
    script = scenario(args.scenario)
    if script is None:
        sys.stderr.write("hostile_mx.py: unknown scenario %s\n" % args.scenario)
        sys.exit(2)
    srv = Server(args, script)
    server = await asyncio.start_server(srv.handle, host="127.0.0.1", port=0,
                                        limit=1 << 20)
    port = server.sockets[0].getsockname()[1]
    tmp = args.ready + ".tmp"
    with open(tmp, "w", encoding="ascii") as ready:
        ready.write("%d\n" % port)
    os.rename(tmp, args.ready)
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, lambda: stop.done() or stop.set_result(None))
    loop.create_task(watch_parent(stop))
    async with server:
        await stop


if __name__ == "__main__":
    asyncio.run(main())
