#!/usr/bin/env python3
"""A scriptable SMTP sink for the engine/eng_conn integration tests.

Built on aiosmtpd. Records every accepted message as one JSON line in the
--record file (written and flushed before the 250 to the final dot, so a
client that saw the 250 can read it): {"from", "rcpts", "body_hex"}, where
body_hex is the message as received after aiosmtpd removed the dot-stuffing
(RFC 5321 4.5.2), CRLF line endings kept.

Faults, each for every connection:
  --rcpt-reply ADDR=REPLY   answer RCPT TO:<ADDR> with REPLY ("550 5.1.1 no")
  --reply-421-at PHASE      answer 421 and close at EHLO, MAIL, RCPT, DATA or DOT
  --stall-dot               never answer the final dot
  --close-after-greeting    close as soon as the first command arrives
  --close-mid-data N        after 354, read N bytes of the body, then close
  --reply-421-mid-data N    after 354, read N bytes of the body, answer 421
                            (unsolicited, the body still coming), then close
  --reply-delay-ms N        wait N ms before the last line of every reply
PIPELINING is offered unless --no-pipelining. With --tls-cert and
--tls-key STARTTLS is offered too, and each record line also says whether
the message came over TLS ("tls") and on a resumed session ("reused").

Listens on 127.0.0.1:--port. Exits on SIGTERM. Exit 77 when aiosmtpd is
missing (the caller skips).
"""
import argparse
import asyncio
import json
import os
import signal
import ssl
import sys

try:
    from aiosmtpd.smtp import SMTP
except ImportError:  # pragma: no cover - depends on the machine
    sys.stderr.write("sink.py: aiosmtpd is not installed\n")
    sys.exit(77)

CLOSING = "421 4.3.2 Service shutting down, closing transmission channel"


def parse_args():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--record", required=True)
    parser.add_argument("--rcpt-reply", action="append", default=[])
    parser.add_argument("--reply-421-at", choices=["EHLO", "MAIL", "RCPT", "DATA", "DOT"])
    parser.add_argument("--stall-dot", action="store_true")
    parser.add_argument("--close-after-greeting", action="store_true")
    parser.add_argument("--close-mid-data", type=int, default=-1)
    parser.add_argument("--reply-421-mid-data", type=int, default=-1)
    parser.add_argument("--reply-delay-ms", type=int, default=0)
    parser.add_argument("--no-pipelining", action="store_true")
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    args = parser.parse_args()
    args.rcpt_replies = {}
    for item in args.rcpt_reply:
        addr, _, reply = item.partition("=")
        args.rcpt_replies[addr.lower()] = reply
    return args


class Handler:
    def __init__(self, args):
        self.args = args
        self.record = open(args.record, "a", encoding="ascii")

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        if self.args.reply_421_at == "EHLO":
            return [CLOSING]
        if not self.args.no_pipelining:
            responses.insert(len(responses) - 1, "250-PIPELINING")
        return responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if self.args.reply_421_at == "MAIL":
            return CLOSING
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.args.reply_421_at == "RCPT":
            return CLOSING
        reply = self.args.rcpt_replies.get(address.lower())
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.args.reply_421_at == "DOT":
            return CLOSING
        if self.args.stall_dot:
            await asyncio.sleep(3600)
        line = {
            "from": envelope.mail_from,
            "rcpts": list(envelope.rcpt_tos),
            "peer": session.peer[0] if session.peer else "",
            "body_hex": envelope.original_content.hex(),
        }
        obj = session.ssl.get("ssl_object") if session.ssl else None
        if obj is not None:
            line["tls"] = True
            line["reused"] = bool(obj.session_reused)
        self.record.write(json.dumps(line) + "\n")
        self.record.flush()
        return "250 2.0.0 OK queued"


class FaultySMTP(SMTP):
    """aiosmtpd's server plus the faults no handler hook can express."""

    def __init__(self, handler, args, tls_context=None):
        kwargs = {"tls_context": tls_context} if tls_context is not None else {}
        super().__init__(handler, hostname="sink.test", enable_SMTPUTF8=True,
                         decode_data=False, **kwargs)
        self.args = args

    async def push(self, status):
        text = status if isinstance(status, str) else status.decode("ascii", "replace")
        if self.args.reply_delay_ms > 0 and (len(text) == 3 or text[3:4] == " "):
            await asyncio.sleep(self.args.reply_delay_ms / 1000.0)
        await super().push(status)
        if text.startswith("421") and self.transport is not None:
            self.transport.close()

    async def smtp_EHLO(self, hostname):
        if self.args.close_after_greeting:
            self.transport.close()
            return
        await super().smtp_EHLO(hostname)

    async def smtp_HELO(self, hostname):
        if self.args.close_after_greeting:
            self.transport.close()
            return
        await super().smtp_HELO(hostname)

    async def smtp_DATA(self, arg):
        if self.args.reply_421_at == "DATA":
            await self.push(CLOSING)
            return
        if self.args.close_mid_data >= 0:
            await self.push("354 End data with <CR><LF>.<CR><LF>")
            await self._reader.readexactly(self.args.close_mid_data)
            self.transport.close()
            return
        if self.args.reply_421_mid_data >= 0:
            await self.push("354 End data with <CR><LF>.<CR><LF>")
            await self._reader.readexactly(self.args.reply_421_mid_data)
            await self.push(CLOSING)
            return
        await super().smtp_DATA(arg)


async def main():
    args = parse_args()
    handler = Handler(args)
    loop = asyncio.get_running_loop()
    tls_context = None
    if args.tls_cert:
        tls_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls_context.load_cert_chain(args.tls_cert, args.tls_key)
    server = await loop.create_server(lambda: FaultySMTP(handler, args, tls_context),
                                      host="127.0.0.1", port=args.port,
                                      reuse_address=True)
    stop = loop.create_future()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, lambda: stop.done() or stop.set_result(None))
    loop.create_task(watch_parent(stop))
    async with server:
        await stop


async def watch_parent(stop):
    """Exit when the test that started us is gone (a crashed test)."""
    parent = os.getppid()
    while not stop.done():
        if os.getppid() != parent:
            stop.set_result(None)
            return
        await asyncio.sleep(0.2)


if __name__ == "__main__":
    asyncio.run(main())
