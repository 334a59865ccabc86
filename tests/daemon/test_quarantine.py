#!/usr/bin/python3
"""test_quarantine.py - a record that fails its read-back is quarantined at
run time (reliability.md KRN-05, without dm-dust: the bad block is a body
byte flipped on disk, so the O_DIRECT read-back fails its CRC).

20 messages pre-loaded with `ringmail-spool load` into shard 0 (the daemon
runs 2 shards: some are read back through the mailbox); the daemon holds
them (hold = yes) while one body byte of the victim is flipped in its
segment; SIGHUP turns hold off. Then, while the daemon runs:
  - the victim never reaches the sink; every other message does, once;
  - stderr says so once, naming the copy in <shard>/quarantine/
    (SEGMENT-OFFSET.bad, recovery's naming), which holds the record's bytes;
  - the delivery log has one Bounce for the victim's recipient (554 5.3.0,
    "quarantined") and the sender gets one DSN;
  - the daemon keeps running: a message submitted afterwards is delivered.
The victim's segment is then deleted (every recipient in it final: the
bounce was journaled), and a restart recovers nothing to deliver.

Usage: test_quarantine.py BUILD_ROOT
"""
import json
import os
import re
import signal
import smtplib
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from daemon_tap import (Daemon, _children, build_root, diag, done, message_id_of,  # noqa: E402
                        ok, read_jsonl, wait_for)

root = build_root()
here = os.path.dirname(os.path.abspath(__file__))
spool_tool = os.path.join(root, "tools", "ringmail-spool")
COUNT = 20


def main():
    d = Daemon(root, "dquar")
    r = subprocess.run([spool_tool, "-d", d.spool, "load", "--shards", "1", "--count",
                        str(COUNT), "--size", "3000", "--domains", "4", "--seed", "5"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=300)
    if not ok(r.returncode == 0, "ringmail-spool load: %d messages" % COUNT):
        diag(r.stderr.decode(errors="replace"))
        return
    listing = d.spool_ls()
    victim = sorted(listing)[COUNT // 2]
    victim_js = d.spool_show(victim)
    victim_id = message_id_of(victim_js["headers"]) if victim_js else None
    victim_rcpts = listing[victim].get("recipients", [])
    victim_sender = listing[victim].get("sender")
    diag("victim %s" % json.dumps(listing[victim]))
    ok(victim_id is not None, "the victim %s has a Message-ID" % victim)
    record = os.path.join(d.dir, "sink.jsonl")
    sink = subprocess.Popen(["/usr/bin/python3", os.path.join(here, "rec_sink.py"), "--port",
                             str(d.sink_port), "--record", record, "--stats",
                             os.path.join(d.dir, "sink.stats")],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    _children.append(sink)
    ok(sink.stdout.readline().startswith(b"listening"), "rec_sink listens")
    if not ok(d.start(timeout=120), "the daemon recovers the %d messages (hold = yes)" % COUNT):
        return
    # Queue id: shard (2 hex), segment id (16), offset (8). One body byte
    # of the victim flipped on disk: its record no longer passes its CRC.
    shard, seg_id, offset = int(victim[:2], 16), victim[2:18], int(victim[18:], 16)
    seg = os.path.join(d.spool, "%d" % shard, "msg", seg_id + ".seg")
    with open(seg, "r+b") as f:
        f.seek(offset + 1500)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0x20]))
        f.flush()
        os.fsync(f.fileno())
    with open(d.conf) as f:
        conf = f.read().replace("hold = yes\n", "")
    with open(d.conf, "w") as f:
        f.write(conf)
    mark = len(d.output())
    d.proc.send_signal(signal.SIGHUP)
    ok(bool(d.wait_line(r"configuration reloaded", 60, mark)), "SIGHUP turns hold off")

    def plain():
        return [x for x in read_jsonl(record) if x.get("from")]
    wait_for(lambda: len(plain()) >= COUNT - 1, 120, 0.1)
    line = d.wait_line(r"message %s unreadable .*quarantined to (\S+)," % victim, 60, mark)
    ok(bool(line), "stderr: the victim is unreadable and quarantined")
    lines = [x for x in d.output()[mark:] if victim in x]
    ok(len(lines) == 1, "said once (%d lines)" % len(lines))
    bad = os.path.join(d.spool, "%d" % shard, "quarantine", "%s-%08x.bad" % (seg_id, offset))
    data = open(bad, "rb").read() if os.path.exists(bad) else b""
    ok(line and bad in line and data[:4] == b"RMSP" and len(data) > 3000,
       "the record's bytes are in %s (%d bytes)" % (os.path.relpath(bad, d.dir), len(data)))
    ok(d.proc.poll() is None, "the daemon keeps running")

    # Still delivering: a message submitted after the quarantine.
    sent = True
    try:
        with smtplib.SMTP("127.0.0.1", d.ports["main"], timeout=30) as s:
            s.sendmail("after@src.test", ["late@d0.test"],
                       "Subject: after\r\nMessage-ID: <after-quarantine@test>\r\n\r\nlate\r\n")
    except (OSError, smtplib.SMTPException) as e:
        diag("submission failed: %s" % e)
        sent = False
    wait_for(lambda: len(plain()) >= COUNT, 60, 0.1)
    got = [message_id_of(x["body"]) for x in plain()]
    ok(sent and "<after-quarantine@test>" in got, "a message submitted afterwards is delivered")
    others = [i for i in got if i != "<after-quarantine@test>"]
    ok(len(others) == COUNT - 1 and len(set(others)) == COUNT - 1 and victim_id not in others,
       "the other %d messages delivered once each, the victim never (%d records)"
       % (COUNT - 1, len(others)))

    log = os.path.join(d.dir, "delivery.log")
    wait_for(lambda: any(e["type"] == "Bounce" and e["queue_id"] == victim
                         for e in read_jsonl(log)), 30, 0.1)
    mine = [e for e in read_jsonl(log) if e["queue_id"] == victim and e["type"] != "Reception"]
    ok(len(mine) == max(1, len(victim_rcpts)) and all(
        e["type"] == "Bounce" and e["code"] == 554 and e["enhanced"] == "5.3.0" and
        "quarantined" in (e["text"] or "") for e in mine),
       "delivery log: one Bounce 554 5.3.0 per victim recipient, nothing else (%s)"
       % [(e["type"], e["code"], e["enhanced"]) for e in mine])
    wait_for(lambda: any(not x.get("from") for x in read_jsonl(record)), 30, 0.1)
    dsns = [x for x in read_jsonl(record) if not x.get("from")]
    ok(len(dsns) == 1 and dsns[0]["rcpts"] == [victim_sender] and
       "5.3.0" in dsns[0]["body"],
       "one DSN (5.3.0) to the victim's sender %s (%s)"
       % (victim_sender, [x["rcpts"] for x in dsns]))
    ok(d.stop(), "it stops with exit 0")

    # The spool deletes a segment once every recipient in it is final: the
    # victim's segment goes only if its bounce was journaled (left live, it
    # would be kept, and a restart would find it again).
    ok(wait_for(lambda: not os.path.exists(seg), 30, 0.1),
       "its segment is deleted: the victim's recipient is journaled final")
    mark = len(d.output())
    started = d.start(timeout=120) and d.wait_line(r"ringmail: started .*", 60, mark)
    ok(started and re.search(r" 0 recipients to deliver", started),
       "a restart has nothing to deliver (%s)" % (started or "").strip())
    ok(d.stop(), "and stops with exit 0")
    ok(len(read_jsonl(record)) == COUNT + 1, "nothing was sent again (%d records)"
       % len(read_jsonl(record)))
    sink.terminate()
    sink.wait(timeout=30)


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # done() exits: say what broke, as a failure
        ok(False, "the test itself failed: %r" % e)
        raise
    finally:
        done()
