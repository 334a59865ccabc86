#!/usr/bin/python3
"""rec_sink.py - a recording SMTP sink for the daemon tests (plain asyncio,
no third-party module, so it never skips).

Speaks enough ESMTP for ringmail's client: 220 greeting, EHLO (PIPELINING,
8BITMIME, SMTPUTF8, ENHANCEDSTATUSCODES), MAIL, RCPT, DATA, RSET, NOOP,
QUIT; commands are read line by line, so pipelined groups just work.

Records, each as one JSON line appended and flushed to --record BEFORE the
250 to the final dot (a client that saw the 250 finds it there):
  {"from": ..., "rcpts": [...], "message_id": ..., "body": "<text>"}

Concurrency: a session counts for the domain of its first accepted RCPT
until it closes; the highest count seen per domain is rewritten to
--stats (JSON {"max": {domain: n}, "sessions": n, "in_data": n}) whenever
it changes.

Faults:
  --reject-domain D   RCPT to domain D answered 550 5.1.1 (repeatable)
  --defer-domain D    RCPT to domain D answered 451 4.2.0 (repeatable)
  --dot-delay-ms N    wait N ms before answering the final dot
  --stall-dot         never answer the final dot (until the client leaves)

Listens on 127.0.0.1:--port; SIGTERM ends it. The port is printed on
stdout ("listening PORT") once the socket is bound.
"""
import argparse
import asyncio
import json
import os
import re
import signal

STATS = {"max": {}, "sessions": 0, "in_data": 0, "messages": 0}
CURRENT = {}


def write_stats(path):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(STATS, f)
    os.replace(tmp, path)


def domain_of(addr):
    return addr.rsplit("@", 1)[-1].lower() if "@" in addr else ""


async def session(reader, writer, args):
    domain = None
    sender, rcpts = None, []
    STATS["sessions"] += 1

    def send(text):
        writer.write((text + "\r\n").encode())

    try:
        send("220 rec-sink ESMTP")
        await writer.drain()
        while True:
            line = await reader.readline()
            if not line:
                return
            cmd = line.decode("utf-8", "replace").rstrip("\r\n")
            verb = cmd[:4].upper()
            if verb in ("EHLO", "HELO"):
                send("250-rec-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n"
                     "250-SMTPUTF8\r\n250 ENHANCEDSTATUSCODES")
            elif verb == "MAIL":
                m = re.search(r"<([^>]*)>", cmd)
                sender, rcpts = (m.group(1) if m else ""), []
                send("250 2.1.0 ok")
            elif verb == "RCPT":
                m = re.search(r"<([^>]*)>", cmd)
                addr = m.group(1) if m else ""
                d = domain_of(addr)
                if d in args.reject_domain:
                    send("550 5.1.1 <%s>: recipient rejected by rec-sink" % addr)
                elif d in args.defer_domain:
                    send("451 4.2.0 <%s>: try again later (rec-sink)" % addr)
                else:
                    rcpts.append(addr)
                    if domain is None:
                        domain = d
                        CURRENT[d] = CURRENT.get(d, 0) + 1
                        if CURRENT[d] > STATS["max"].get(d, 0):
                            STATS["max"][d] = CURRENT[d]
                            write_stats(args.stats)
                    send("250 2.1.5 ok")
            elif verb == "DATA":
                if not rcpts:
                    send("554 5.5.1 no valid recipients")
                    continue
                send("354 go ahead")
                await writer.drain()
                body = bytearray()
                while True:
                    chunk = await reader.readline()
                    if not chunk:
                        return
                    if chunk == b".\r\n":
                        break
                    if chunk.startswith(b"."):
                        chunk = chunk[1:]
                    body += chunk
                STATS["in_data"] += 1
                write_stats(args.stats)
                if args.stall_dot:
                    await reader.read()  # until the client gives up
                    return
                if args.dot_delay_ms > 0:
                    await asyncio.sleep(args.dot_delay_ms / 1000.0)
                text = body.decode("utf-8", "replace")
                m = re.search(r"^Message-ID:\s*(\S+)", text, re.I | re.M)
                rec = {"from": sender, "rcpts": rcpts,
                       "message_id": m.group(1) if m else None, "body": text}
                with open(args.record, "a") as f:
                    f.write(json.dumps(rec) + "\n")
                    f.flush()
                STATS["messages"] += 1
                STATS["in_data"] -= 1
                write_stats(args.stats)
                send("250 2.0.0 queued")
                rcpts = []
            elif verb == "RSET":
                sender, rcpts = None, []
                send("250 2.0.0 ok")
            elif verb == "NOOP":
                send("250 2.0.0 ok")
            elif verb == "QUIT":
                send("221 2.0.0 bye")
                await writer.drain()
                return
            else:
                send("502 5.5.2 unknown command")
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        if domain is not None:
            CURRENT[domain] -= 1
        writer.close()


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--record", required=True)
    p.add_argument("--stats", required=True)
    p.add_argument("--reject-domain", action="append", default=[])
    p.add_argument("--defer-domain", action="append", default=[])
    p.add_argument("--dot-delay-ms", type=int, default=0)
    p.add_argument("--stall-dot", action="store_true")
    args = p.parse_args()
    args.reject_domain = [d.lower() for d in args.reject_domain]
    args.defer_domain = [d.lower() for d in args.defer_domain]
    write_stats(args.stats)
    server = await asyncio.start_server(lambda r, w: session(r, w, args), args.host,
                                        args.port)
    print("listening %d" % server.sockets[0].getsockname()[1], flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    server.close()


if __name__ == "__main__":
    asyncio.run(main())
