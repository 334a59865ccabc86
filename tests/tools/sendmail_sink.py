#!/usr/bin/python3
"""A recording SMTP sink for the ringmail-sendmail test (aiosmtpd).

  sendmail_sink.py --ready FILE --record FILE [--mode MODE]

Listens on 127.0.0.1 on a free port and writes the port to --ready once it
listens (the test polls for that file). Each accepted message becomes one
JSON line in --record, written before the 250 to the final dot:
{"from", "rcpts", "mail_options", "body_hex"}, body_hex being the message
as aiosmtpd received it with the dot-stuffing removed (RFC 5321 4.5.2).

--mode:
  accept     250 to everything (default)
  rcpt-4xx   450 4.2.0 to every RCPT
  rcpt-5xx   550 5.1.1 to RCPT TO:<bad@example.test>, 250 to others
  dot-4xx    451 4.3.0 to the final dot
  dot-5xx    554 5.6.0 to the final dot
  greet-421  421 instead of the greeting

Exits on SIGTERM, or when its parent (the test) is gone. Exit 77 when
aiosmtpd is missing.
"""
import argparse
import asyncio
import json
import os
import signal
import sys

try:
    from aiosmtpd.smtp import SMTP
except ImportError:  # pragma: no cover - depends on the machine
    sys.stderr.write("sendmail_sink.py: aiosmtpd is not installed\n")
    sys.exit(77)


class Handler:
    def __init__(self, args):
        self.args = args
        self.record = open(args.record, "a", encoding="ascii")

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.args.mode == "rcpt-4xx":
            return "450 4.2.0 mailbox busy, try later"
        if self.args.mode == "rcpt-5xx" and address.lower() == "bad@example.test":
            return "550 5.1.1 <bad@example.test>: no such user"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.args.mode == "dot-4xx":
            return "451 4.3.0 queue file write error"
        if self.args.mode == "dot-5xx":
            return "554 5.6.0 message refused"
        line = {
            "from": envelope.mail_from,
            "rcpts": list(envelope.rcpt_tos),
            "mail_options": list(envelope.mail_options),
            "body_hex": envelope.original_content.hex(),
        }
        self.record.write(json.dumps(line) + "\n")
        self.record.flush()
        return "250 2.0.0 Ok: queued as TEST1"


class Sink(SMTP):
    def __init__(self, handler, args):
        super().__init__(handler, hostname="sink.test", decode_data=False,
                         enable_SMTPUTF8=True)
        self.args = args

    async def _handle_client(self):
        if self.args.mode == "greet-421":
            await self.push("421 4.3.2 not now")
            self.transport.close()
            return
        await super()._handle_client()


async def watch_parent(stop):
    parent = os.getppid()
    while not stop.done():
        if os.getppid() != parent:
            stop.set_result(None)
            return
        await asyncio.sleep(0.2)


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--ready", required=True)
    parser.add_argument("--record", required=True)
    parser.add_argument("--mode", default="accept",
                        choices=["accept", "rcpt-4xx", "rcpt-5xx", "dot-4xx", "dot-5xx",
                                 "greet-421"])
    args = parser.parse_args()
    handler = Handler(args)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Sink(handler, args), host="127.0.0.1", port=0)
    port = server.sockets[0].getsockname()[1]
    tmp = args.ready + ".tmp"
    with open(tmp, "w", encoding="ascii") as ready:
        ready.write("%d\n" % port)
    os.rename(tmp, args.ready)
    stop = loop.create_future()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, lambda: stop.done() or stop.set_result(None))
    loop.create_task(watch_parent(stop))
    async with server:
        await stop


if __name__ == "__main__":
    asyncio.run(main())
