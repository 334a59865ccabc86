#!/usr/bin/env python3
"""check_out.py SAMPLE_EXE - validate the engine's delivery log lines and
DSNs with parsers that are not ours: Python's json and email packages.

Log: every line is one JSON object with the documented keys, in order, of
the documented types. DSN: valid SMTP wire form (CRLF only, dot-stuffed,
ends CRLF.CRLF, lines <= 998), and after un-stuffing a multipart/report
(report-type=delivery-status) with text/plain, message/delivery-status and
text/rfc822-headers parts, the required RFC 3464 fields per recipient, and
no header smuggled in by reply text or addresses.
"""
import email
import email.policy
import email.utils
import json
import re
import subprocess
import sys

LOG_KEYS = ["type", "time", "queue_id", "sender", "recipient", "domain", "mx_host",
            "mx_ip", "attempt", "code", "enhanced", "text", "category", "timings", "tls"]
EVENTS = {"Reception", "Delivery", "TransientFailure", "Bounce", "Expiration"}
TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
failures = []


def check(condition, what):
    if not condition:
        failures.append(what)


def check_log(exe):
    out = subprocess.run([exe, "log"], check=True, capture_output=True).stdout
    check(out.endswith(b"\n"), "log output ends with a newline")
    lines = out.split(b"\n")[:-1]
    check(len(lines) >= 5, "at least one line per event type")
    seen = set()
    for number, raw in enumerate(lines, 1):
        check(b"\r" not in raw, f"line {number}: no CR inside a line")
        obj = json.loads(raw.decode("utf-8"))  # strict UTF-8, strict JSON
        check(list(obj.keys()) == LOG_KEYS, f"line {number}: keys {list(obj.keys())}")
        check(obj["type"] in EVENTS, f"line {number}: type {obj['type']}")
        seen.add(obj["type"])
        check(TIME_RE.match(obj["time"]) is not None, f"line {number}: time {obj['time']}")
        check(isinstance(obj["attempt"], int), f"line {number}: attempt is an integer")
        check(obj["code"] is None or isinstance(obj["code"], int), f"line {number}: code")
        check(obj["enhanced"] is None or re.match(r"^[245]\.\d{1,3}\.\d{1,3}$", obj["enhanced"]),
              f"line {number}: enhanced")
        has_category = obj["type"] in ("TransientFailure", "Bounce", "Expiration")
        check((obj["category"] is not None) == has_category, f"line {number}: category")
        check(set(obj["timings"].keys()) == {"queued_ms", "connect_ms", "transaction_ms"},
              f"line {number}: timings keys")
        tls = obj["tls"]
        check(tls is None or list(tls.keys()) == ["used", "version", "cipher", "verified"],
              f"line {number}: tls keys")
        if obj["text"] is not None:
            check(len(obj["text"]) <= 1024, f"line {number}: text bounded")
    check(seen == EVENTS, f"every event type printed: {seen}")


def unstuff(wire, which):
    check(wire.endswith(b"\r\n.\r\n"), f"dsn {which}: ends with CRLF.CRLF")
    check(b"\r\n" in wire, f"dsn {which}: has CRLF line ends")
    check(wire.replace(b"\r\n", b"").find(b"\r") < 0, f"dsn {which}: no bare CR")
    check(wire.replace(b"\r\n", b"").find(b"\n") < 0, f"dsn {which}: no bare LF")
    check(all(b < 0x80 for b in wire), f"dsn {which}: 7-bit")
    lines = wire[:-len(b".\r\n")].split(b"\r\n")[:-1]
    out = []
    for line in lines:
        check(len(line) <= 999, f"dsn {which}: line of {len(line)} bytes")
        check(line != b".", f"dsn {which}: no lone dot before the end")
        if line.startswith(b"."):
            check(line.startswith(b".."), f"dsn {which}: dot-stuffed {line[:20]!r}")
            line = line[1:]
        out.append(line)
    return b"\r\n".join(out) + b"\r\n"


def check_dsn(exe, which, rcpt_count):
    wire = subprocess.run([exe, "dsn", str(which)], check=True, capture_output=True).stdout
    text = unstuff(wire, which)
    msg = email.message_from_bytes(text, policy=email.policy.compat32)
    check(msg.is_multipart(), f"dsn {which}: is multipart")
    check(msg.get_content_type() == "multipart/report", f"dsn {which}: multipart/report")
    check(msg.get_param("report-type") == "delivery-status", f"dsn {which}: report-type")
    check(msg["From"].startswith("Mail Delivery System <MAILER-DAEMON@"), f"dsn {which}: From")
    check(msg["To"] == "<news@example.org>", f"dsn {which}: To is the original sender")
    for name in ("Subject", "Date", "Message-ID"):
        check(msg[name] is not None, f"dsn {which}: {name} present")
    check(msg["Auto-Submitted"] == "auto-replied", f"dsn {which}: Auto-Submitted")
    check(email.utils.parsedate_to_datetime(msg["Date"]) is not None, f"dsn {which}: Date")
    for smuggled in ("Bcc", "X-Evil"):
        check(msg[smuggled] is None, f"dsn {which}: no {smuggled} header at the top")
    parts = msg.get_payload()
    types = [p.get_content_type() for p in parts]
    check(types == ["text/plain", "message/delivery-status", "text/rfc822-headers"],
          f"dsn {which}: part types {types}")
    if len(parts) != 3:
        return
    blocks = parts[1].get_payload()  # compat32: one Message per field block
    check(len(blocks) == 1 + rcpt_count, f"dsn {which}: {len(blocks)} blocks, want 1 + {rcpt_count}")
    check(blocks[0]["Reporting-MTA"] == "dns; mail.ringmail.test", f"dsn {which}: Reporting-MTA")
    check(blocks[0]["Arrival-Date"] is not None, f"dsn {which}: Arrival-Date")
    for block in blocks[1:]:
        for name in ("Final-Recipient", "Action", "Status"):
            check(block[name] is not None, f"dsn {which}: {name} in every recipient block")
        check(block["Action"] == "failed", f"dsn {which}: Action failed")
        check(re.match(r"^[45]\.\d{1,3}\.\d{1,3}$", block["Status"] or "") is not None,
              f"dsn {which}: Status {block['Status']}")
        check(block["Final-Recipient"].startswith("rfc822; "), f"dsn {which}: address type")
        for smuggled in ("Bcc", "X-Evil"):
            check(block[smuggled] is None, f"dsn {which}: no {smuggled} field")
        diagnostic = block["Diagnostic-Code"]
        check(diagnostic is None or diagnostic.startswith("smtp; "), f"dsn {which}: Diagnostic")
    original = email.message_from_string(parts[2].get_payload(), policy=email.policy.compat32)
    check(original["Message-ID"] == "<abc@example.org>", f"dsn {which}: original headers")
    check(original[".Dotted-Header"] is not None, f"dsn {which}: un-stuffed header kept")


def main():
    exe = sys.argv[1]
    check_log(exe)
    counts = subprocess.run([exe, "dsn-count"], check=True, capture_output=True).stdout.split()
    count = len(counts)
    check(count > 0, "at least one DSN sample")
    for which, rcpt_count in enumerate(counts):
        check_dsn(exe, which, int(rcpt_count))
    for failure in failures:
        print("FAIL:", failure)
    print(f"{'ok' if not failures else 'FAILED'}: log and {count} DSNs checked")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
