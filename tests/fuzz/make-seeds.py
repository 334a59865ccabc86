#!/usr/bin/python3
"""make-seeds.py - write the seed corpora of tests/fuzz/corpus/<harness>/.

The seeds are small hand-written inputs (real SMTP replies and sessions,
smuggling sequences, spool records) in each harness's input format
(see the header comment of each tests/fuzz/fuzz_*.c). Run it after changing
a format; the files it writes are committed. Inputs found by fuzzing go to
the build directory, never here, unless one is a regression worth keeping
(then add it below by name).

    tests/fuzz/make-seeds.py            rewrite every corpus
"""
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")


def write(harness, name, data):
    d = os.path.join(CORPUS, harness)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def split(*sizes):
    """4-byte split pattern: chunk sizes, 0 = the rest."""
    s = list(sizes) + [0] * (4 - len(sizes))
    return bytes(s[:4])


# ---- fuzz_reply: split pattern, then server bytes ---------------------

REPLIES = {
    "greeting": b"220 mx.example.com ESMTP Postfix (Debian/GNU)\r\n",
    "ehlo": b"250-mx.example.com\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n"
            b"250-8BITMIME\r\n250-SMTPUTF8\r\n250-ENHANCEDSTATUSCODES\r\n250 CHUNKING\r\n",
    "pipelined": b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
                 b"550 5.1.1 <nobody@example.com>: Recipient address rejected\r\n"
                 b"354 End data with <CR><LF>.<CR><LF>\r\n",
    "closing": b"421 4.3.2 Service shutting down, closing transmission channel\r\n",
    "code_changed": b"250-first\r\n251 second\r\n",
    "bare_lf": b"250 ok\n",
    "bare_cr": b"250 ok\rx\r\n",
    "bare_code": b"250\r\n250 \r\n",
    "class_mismatch": b"550 2.1.0 class does not match\r\n",
    "enhanced_bad": b"250 2.1 short\r\n450 4.1234.1 long\r\n",
    "nul": b"250 a\x00b\r\n",
    "controls": b"250 tab\there \x01\x7f \xc3\xa9t\xc3\xa9\r\n",
    "bad_code": b"620 no\r\n",
    "long_text": b"".join(b"250-" + bytes([0x61 + i]) * 1900 + b"\r\n" for i in range(4))
                 + b"250 " + b"z" * 1900 + b"\r\n",
    "line_too_long": b"250 " + b"x" * 2100 + b"\r\n",
    "lines_128": b"250-x\r\n" * 127 + b"250 x\r\n",
    "lines_129": b"250-x\r\n" * 128 + b"250 x\r\n",
}


def reply_seeds():
    for name, data in REPLIES.items():
        write("fuzz_reply", name, split() + data)
    write("fuzz_reply", "ehlo_split_bytes", split(1, 1, 1, 1) + REPLIES["ehlo"])
    write("fuzz_reply", "pipelined_split", split(3, 7, 1, 0) + REPLIES["pipelined"])


# ---- fuzz_dot: split pattern, then a message --------------------------

DOT = {
    "message": b"Subject: hello\r\n\r\nbody line\r\n.\r\n",
    "empty": b".\r\n",
    "stuffed": b"..leading\r\n...\r\n..\r\n.\r\n",
    "raw_dots": b".leading\r\n.\r\nnot the end\r\n",
    "unterminated": b"line one\r\n.last",
    "smuggle_lf": b"a\r\n\n.\n\r\nMAIL FROM:<x@y>\r\n.\r\n",
    "smuggle_cr": b"a\r\r.\r\rMAIL FROM:<x@y>\r\n.\r\n",
    "smuggle_mixed": b"a\r\n.\nRCPT TO:<x@y>\r\n\n.\r\nDATA\r\n.\r\n",
    "early_end": b"a\r\n.\r\nQUIT\r\n",
    "bare_cr_end": b"abc\r",
}


def dot_seeds():
    for name, data in DOT.items():
        write("fuzz_dot", name, split() + data)
    write("fuzz_dot", "message_bytes", split(1, 1, 1, 1) + DOT["message"])
    write("fuzz_dot", "smuggle_split", split(2, 3, 1, 0) + DOT["smuggle_mixed"])


# ---- fuzz_record: mode byte, then bytes -------------------------------

def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF


def record(rtype, body, seq=7, seg=3, off=4096, shard=1, version=1):
    size = 40 + len(body)
    size = (size + 7) // 8 * 8
    body = body + b"\0" * (size - 40 - len(body))
    hdr = struct.pack("<IBBHIIQQIHH", 0x50534D52, version, rtype, 0, size, 0, seq, seg, off,
                      shard, 0)
    rec = bytearray(hdr + body)
    struct.pack_into("<I", rec, 12, crc32c(bytes(rec)))
    return bytes(rec)


def message_body(sender, rcpts, msg, created=1700000000 * 10**9, expires=1700432000 * 10**9):
    b = struct.pack("<QQIHH", created, expires, len(msg), len(sender), len(rcpts)) + sender
    for r in rcpts:
        b += struct.pack("<H", len(r)) + r
    return b + msg


def record_seeds():
    msg = record(1, message_body(b"sender@example.com", [b"a@example.net", b"b@example.org"],
                                 b"Subject: hi\r\n\r\n..dot\r\nbody\r\n.\r\n"))
    outcome = record(2, struct.pack("<QIHHIIQ", 3, 4096, 1, 4, 1, 0, 1700000100 * 10**9))
    pad = record(3, b"\0" * 24)
    write("fuzz_record", "message", b"\0" + msg)
    write("fuzz_record", "message_null_sender", b"\0" + record(1, message_body(b"", [b"x"], b"\r\n.\r\n")))
    write("fuzz_record", "outcome", b"\0" + outcome)
    write("fuzz_record", "pad", b"\0" + pad)
    write("fuzz_record", "segment", b"\0" + msg + outcome + pad + b"\0" * 64)
    # OUTCOME version 2 (docs/spool-format.md 2.2): the attempt count where
    # version 1 reserved the word; a version-1 record is "outcome" above.
    outcome_v2 = record(2, struct.pack("<QIHHIIQ", 3, 4096, 1, 4, 1, 3, 1700000100 * 10**9),
                        version=2)
    write("fuzz_record", "outcome_v2", b"\0" + outcome_v2)
    write("fuzz_record", "sealed_outcome_v2", b"\1" + outcome_v2[:12] + b"\0\0\0\0"
          + outcome_v2[16:])
    write("fuzz_record", "segment_v2", b"\0" + msg + outcome + outcome_v2 + pad + b"\0" * 64)
    bad_crc = bytearray(msg)
    bad_crc[12] ^= 0xFF
    write("fuzz_record", "sealed_message", b"\1" + bytes(bad_crc))
    write("fuzz_record", "sealed_outcome", b"\1" + outcome[:12] + b"\0\0\0\0" + outcome[16:])
    write("fuzz_record", "zero", b"\0" + b"\0" * 48)
    write("fuzz_record", "magic_only", b"\0RMSP\1")
    write("fuzz_record", "queue_id", b"\0" + b"01000000000000000300001000")
    write("fuzz_record", "queue_id_upper", b"\0" + b"01000000000000000300ABCDEF")
    # mode 2: where(2) xor(1) flags count sender_size(2) created(2+2)
    # expires(2) segment(2) offset(2) shard seq(2), recipient sizes (2
    # each), body; the last 3 bytes are the outcome's index(2) and state.
    built = (b"\2" + struct.pack(">HB", 77, 0x10) + bytes([0, 3]) + struct.pack(">H", 18)
             + struct.pack(">HHHHHBH", 1, 2, 3, 5, 512, 1, 9)
             + struct.pack(">HHH", 13, 1, 512) + b"Subject: x\r\n\r\nbody" + b"\0\1\4")
    write("fuzz_record", "built", built)
    write("fuzz_record", "built_many_rcpts",
          b"\2" + struct.pack(">HB", 5, 1) + bytes([0, 255]) + struct.pack(">H", 0)
          + b"\0" * 15 + b"body\0\0\2")


# ---- fuzz_client: 5 config bytes, then (length, server bytes) chunks --

GREETING = b"220 mx.example.com ESMTP\r\n"
EHLO_PIPE = b"250-mx.example.com\r\n250-PIPELINING\r\n250-SIZE 1000000\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n"
EHLO_PLAIN = b"250-mx.example.com\r\n250 8BITMIME\r\n"
OK = b"250 2.0.0 Ok\r\n"
GO = b"354 End data with <CR><LF>.<CR><LF>\r\n"
QUEUED = b"250 2.0.0 Ok: queued as 4Xyz\r\n"
BYE = b"221 2.0.0 Bye\r\n"


def chunks(*parts):
    out = b""
    for p in parts:
        while len(p) > 255:
            out += b"\xff" + p[:255]
            p = p[255:]
        out += bytes([len(p)]) + p
    return out


def cfg(flags=0, send=0, rcpts=0, body=0, addr=0, tls=0):
    """rcpts: n + 1 recipients (n < 8), or 300 with 128. tls: the STARTTLS
    policy (0 none, 1 opportunistic, 2 required), in byte 4 with addr."""
    return bytes([flags, send, rcpts, body, addr | (tls << 2)])


EHLO_TLS = b"250-mx.example.com\r\n250-PIPELINING\r\n250-SIZE 1000000\r\n250-STARTTLS\r\n250 8BITMIME\r\n"
TLS_GO = b"220 2.0.0 Ready to start TLS\r\n"
TLS_NO = b"454 4.7.0 TLS not available due to local problem\r\n"


def client_tls_seeds(w):
    """STARTTLS (byte 4: 4|8 policy, 16 handshake fails, 32 feed before
    the handshake, 64 bad sender, 128 trace)."""
    after = chunks(EHLO_PIPE, OK + OK + GO, QUEUED, BYE)
    w("tls_opportunistic", cfg(64, tls=1) + chunks(GREETING, EHLO_TLS, TLS_GO) + after)
    w("tls_required", cfg(64, tls=2, addr=128) + chunks(GREETING, EHLO_TLS, TLS_GO) + after)
    w("tls_required_lockstep", cfg(64 | 1, tls=2) + chunks(GREETING, EHLO_TLS, TLS_GO, EHLO_PIPE,
                                                            OK, OK, GO, QUEUED, BYE))
    w("tls_offered_again", cfg(64, tls=1) + chunks(GREETING, EHLO_TLS, TLS_GO, EHLO_TLS,
                                                   OK + OK + GO, QUEUED, BYE))
    w("tls_injection", cfg(0, tls=1) + chunks(GREETING, EHLO_TLS, TLS_GO + b"250-evil\r\n250 ok\r\n"))
    w("tls_injection_later", cfg(0, tls=2, addr=32) + chunks(GREETING, EHLO_TLS, TLS_GO, b"250 ok\r\n"))
    w("tls_handshake_timeout", cfg(2, tls=2, addr=32) + chunks(GREETING, EHLO_TLS, TLS_GO) + b"\0")
    w("tls_handshake_fails", cfg(64, tls=1, addr=16 | 128) + chunks(GREETING, EHLO_TLS, TLS_GO, EHLO_PIPE))
    w("tls_refused_opportunistic", cfg(64, tls=1) + chunks(GREETING, EHLO_TLS, TLS_NO,
                                                           OK + OK + GO, QUEUED, BYE))
    w("tls_refused_required", cfg(64, tls=2) + chunks(GREETING, EHLO_TLS, TLS_NO, BYE))
    w("tls_not_offered_required", cfg(64, tls=3, addr=128) + chunks(GREETING, EHLO_PIPE, BYE))
    w("tls_helo_required", cfg(64, tls=2) + chunks(GREETING, b"502 5.5.2 no EHLO\r\n",
                                                   b"250 mx.example.com\r\n", BYE))
    w("tls_3xx", cfg(0, tls=1) + chunks(GREETING, EHLO_TLS, b"354 what\r\n"))
    w("tls_closing", cfg(0, tls=2) + chunks(GREETING, EHLO_TLS, b"421 4.3.2 shutting down\r\n"))
    w("tls_partial_send", cfg(64, send=128 | 3, tls=1) + chunks(GREETING, EHLO_TLS, TLS_GO, EHLO_PIPE,
                                                                OK + OK + GO, QUEUED, BYE))


def client_pipeline_seeds(w):
    """The next transaction pipelined behind the dot (RFC 2920 3.1; byte 3:
    16 take SMTP_EV_PIPELINE_SLOT, 32 a third message, 64 take it after
    one more send, 128 the messages differ and only the second has the
    byte 0/3/4 quirks). One chunk answers the previous end of data and the
    next batch together, as a pipelining server does."""
    DONE = QUEUED
    w("dot_pipelined", cfg(64 | 4, body=16) + chunks(GREETING, EHLO_PIPE, OK + OK + GO,
                                                     DONE + OK + OK + GO, DONE, BYE))
    w("dot_three_late_small_sends", cfg(64 | 4, send=100, rcpts=1, body=3 | 16 | 32 | 64) + chunks(
        GREETING, EHLO_PIPE, OK + OK + OK + GO, DONE + OK + OK + OK + GO,
        DONE + OK + b"450 4.2.0 busy\r\n" + OK + GO, DONE, BYE))
    w("dot_three_late_dot", cfg(64 | 4, body=16 | 32 | 64 | 128) + chunks(
        GREETING, EHLO_PIPE, OK + OK + GO, DONE + OK + OK + GO, DONE + OK + OK + GO, DONE, BYE))
    w("dot_first_5xx", cfg(64 | 4, body=16) + chunks(GREETING, EHLO_PIPE, OK + OK + GO,
                                                     b"554 5.7.1 spam\r\n" + OK + OK + GO, DONE, BYE))
    w("dot_first_4xx_split", cfg(64 | 4, body=2 | 16) + chunks(
        GREETING, EHLO_PIPE, OK + OK + GO, b"451 4.3.0 later\r\n", OK, OK, GO, DONE, BYE))
    w("dot_421_after_first", cfg(4, body=16) + chunks(GREETING, EHLO_PIPE, OK + OK + GO, DONE,
                                                      b"421 4.3.2 shutting down\r\n"))
    w("dot_421_for_first", cfg(4, body=16) + chunks(GREETING, EHLO_PIPE, OK + OK + GO,
                                                    b"421 4.3.2 shutting down\r\n"))
    w("dot_lost", cfg(4, body=3 | 16) + chunks(GREETING, EHLO_PIPE, OK + OK + GO))
    w("dot_timeout", cfg(2 | 4, body=16) + chunks(GREETING, EHLO_PIPE, OK + OK + GO, DONE + OK) + b"\0")
    w("dot_reply_in_body", cfg(4, send=128 | 127, body=3 | 16) + chunks(
        GREETING, EHLO_PIPE, OK + OK + GO, DONE))
    w("dot_refused_second", cfg(64 | 4, body=16 | 32 | 128, addr=2) + chunks(
        GREETING, EHLO_PIPE, OK + OK + GO, DONE + OK + OK + GO, DONE, BYE))
    w("dot_size_refused_second", cfg(128 | 64 | 4, body=16 | 32 | 128) + chunks(
        GREETING, EHLO_PIPE, OK + OK + GO, DONE + OK + OK + GO, DONE, BYE))
    w("dot_rcpts_refused_second", cfg(64 | 4, body=16 | 32) + chunks(
        GREETING, EHLO_PIPE, OK + OK + GO, DONE + OK + b"550 5.1.1 no\r\n" + GO,
        b"554 5.5.1 no valid recipients\r\n", OK + OK + GO, DONE, BYE))
    w("dot_data_refused_second", cfg(64 | 4, body=16 | 32) + chunks(
        GREETING, EHLO_PIPE, OK + OK + GO, DONE + OK + OK + b"451 4.3.0 try later\r\n",
        OK + OK + OK + GO, DONE, BYE))
    w("dot_mail_refused_second", cfg(64 | 4, body=16 | 32) + chunks(
        GREETING, EHLO_PIPE, OK + OK + GO, DONE + b"553 5.7.1 sender\r\n" + b"503 5.5.1 no\r\n" + GO,
        b"554 5.5.1 no valid recipients\r\n", OK + OK + GO, DONE, BYE))
    w("dot_lockstep_no_slot", cfg(64 | 4 | 1, body=16) + chunks(
        GREETING, EHLO_PIPE, OK, OK, GO, DONE, OK, OK, GO, DONE, BYE))
    w("dot_tls", cfg(64 | 4, body=16, tls=2) + chunks(GREETING, EHLO_TLS, TLS_GO, EHLO_PIPE,
                                                      OK + OK + GO, DONE + OK + OK + GO, DONE, BYE))


def client_seeds():
    w = lambda name, data: write("fuzz_client", name, data)
    w("pipelined", cfg(64) + chunks(GREETING, EHLO_PIPE, OK + OK + GO, QUEUED, BYE))
    w("lockstep", cfg(64 | 1, rcpts=1) + chunks(GREETING, EHLO_PLAIN, OK, OK, OK, GO, QUEUED, BYE))
    # No RSET after an end-of-data reply: the second batch is MAIL, RCPT, DATA.
    w("two_messages", cfg(64 | 4, rcpts=0) + chunks(GREETING, EHLO_PIPE, OK + OK + GO, QUEUED,
                                                    OK + OK + GO, QUEUED, BYE))
    w("all_rcpts_refused", cfg(64, rcpts=1) + chunks(
        GREETING, EHLO_PIPE, OK + b"550 5.1.1 no such user\r\n550 5.1.1 no such user\r\n" + GO,
        b"554 5.5.1 no valid recipients\r\n", BYE))
    w("closing_in_rcpt", cfg(0, rcpts=3) + chunks(GREETING, EHLO_PIPE,
                                                  OK + OK + b"421 4.7.0 too busy\r\n"))
    w("ehlo_refused_helo", cfg(64 | 1) + chunks(GREETING, b"502 5.5.2 Error: command not recognized\r\n",
                                                b"250 mx.example.com\r\n", OK, OK, GO, QUEUED, BYE))
    w("greeting_refused", cfg(0) + chunks(b"554 5.7.1 go away\r\n", BYE))
    w("split_every_byte", cfg(64, send=3) + chunks(*[bytes([c]) for c in GREETING + EHLO_PIPE])
      + chunks(OK + OK + GO, QUEUED, BYE))
    w("timeout_in_data", cfg(2, body=3) + chunks(GREETING, EHLO_PIPE, OK + OK + GO) + b"\0")
    w("no_final_reply", cfg(0, send=100, body=3) + chunks(GREETING, EHLO_PIPE, OK + OK + GO))
    w("malformed_bare_lf", cfg(0) + chunks(GREETING, EHLO_PIPE, b"250 ok\n"))
    w("code_changed", cfg(0) + chunks(GREETING, b"250-mx\r\n251 PIPELINING\r\n"))
    w("unsolicited", cfg(0) + chunks(GREETING + b"250 early\r\n", EHLO_PIPE))
    w("reply_before_sent", cfg(0, send=128 | 5) + chunks(GREETING, EHLO_PIPE, OK, OK, GO, QUEUED))
    w("size_refused", cfg(128 | 64) + chunks(GREETING, EHLO_PIPE, BYE))
    w("smtputf8", cfg(16 | 8 | 32 | 64, addr=1) + chunks(GREETING, EHLO_PIPE, OK + OK + GO, QUEUED, BYE))
    w("bad_address", cfg(64, addr=2) + chunks(GREETING, EHLO_PIPE, BYE))
    w("many_rcpts", cfg(64, rcpts=128) + chunks(GREETING, EHLO_PIPE, OK * 301 + GO, QUEUED, BYE))
    w("data_2xx", cfg(0) + chunks(GREETING, EHLO_PIPE, OK + OK + b"250 what\r\n"))
    # RSET only after a transaction without an end-of-data reply (DATA refused here).
    w("rset_refused", cfg(4) + chunks(GREETING, EHLO_PIPE, OK + OK + b"554 5.5.1 no DATA\r\n",
                                      b"500 5.5.1 no RSET\r\n", BYE))
    w("rset_after_refused_lockstep", cfg(64 | 4 | 1) + chunks(
        GREETING, EHLO_PLAIN, OK, b"550 5.1.1 no such user\r\n", OK, OK, OK, GO, QUEUED, BYE))
    w("ehlo_auth_size", cfg(64 | 128) + chunks(
        GREETING, b"250-mx.example.com\r\n250-AUTH PLAIN LOGIN CRAM-MD5\r\n250-AUTH=LOGIN\r\n"
                  b"250-SIZE 184467440737095516160\r\n250-SIZE\r\n250-SIZE 12x\r\n250-DSN\r\n"
                  b"250-CHUNKING\r\n250-X-" + b"K" * 70 + b"\r\n250-ENHANCEDSTATUSCODES\r\n"
                  b"250 SIZE 99999999999999999999\r\n", OK + OK + GO, QUEUED, BYE))
    w("bad_sender", cfg(64, addr=64 | 128) + chunks(GREETING, EHLO_PIPE, BYE))
    w("empty_rcpt", cfg(64, body=4) + chunks(GREETING, EHLO_PIPE, BYE))
    w("long_rcpt", cfg(64 | 4, rcpts=1, body=8) + chunks(GREETING, EHLO_PIPE, BYE))
    w("two_messages_lockstep_8bit", cfg(64 | 4 | 8 | 1, rcpts=2, body=2, addr=128) + chunks(
        GREETING, EHLO_PIPE, OK, OK, b"450 4.2.0 busy\r\n", OK, GO, QUEUED,
        OK, OK, b"550 5.1.1 no\r\n", OK, GO, b"554 5.7.1 spam\r\n", BYE))
    client_tls_seeds(w)
    client_pipeline_seeds(w)


# ---- fuzz_server: config, sends, options, then (length, client bytes) chunks

def scfg(flags, sends, options=0):
    """options (byte 2): 1 STARTTLS offered, 2 TLS required, 4 AUTH only
    under TLS, 8 message_reply, 16 late results, 32 zero limits, 64
    back-pressure CLOSE from chunk 2, 128 feed the rest after STARTTLS."""
    return bytes([flags, sends, options])


def server_tls_seeds(w, ehlo, env, body):
    tls = b"STARTTLS\r\n"
    w("tls", scfg(1, 0, 1) + chunks(ehlo, tls, ehlo, env, body, b"QUIT\r\n"))
    w("tls_required", scfg(1, 0, 1 | 2) + chunks(ehlo, env, b"BDAT 3 LAST\r\nabc", tls, ehlo,
                                                  env, body, b"QUIT\r\n"))
    w("tls_injection", scfg(1, 0, 1 | 128) + chunks(ehlo, tls + b"MAIL FROM:<evil@x>\r\nRSET\r\n",
                                                     ehlo, b"QUIT\r\n"))
    w("tls_injection_dropped", scfg(1, 0, 1) + chunks(ehlo, tls + b"MAIL FROM:<evil@x>\r\n", ehlo,
                                                      b"QUIT\r\n"))
    w("tls_handshake_timeout", scfg(1, 0, 1 | 128) + chunks(ehlo, tls) + b"\0")
    w("tls_refusals", scfg(1, 0, 1) + chunks(ehlo, b"STARTTLS now\r\n",
                                             b"MAIL FROM:<a@b>\r\n", tls, b"RSET\r\n", tls,
                                             ehlo, tls, b"QUIT\r\n"))
    w("tls_not_offered", scfg(1, 0, 0) + chunks(ehlo, tls, b"QUIT\r\n"))
    w("tls_auth", scfg(2 | 64, 0, 1 | 4) + chunks(ehlo, b"AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n", tls,
                                                   ehlo, b"AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n",
                                                   env, body, b"QUIT\r\n"))
    w("tls_auth_no_starttls", scfg(2, 0, 4) + chunks(ehlo, b"AUTH PLAIN\r\n", b"QUIT\r\n"))
    w("tls_required_auth", scfg(2 | 64, 0, 1 | 2) + chunks(ehlo, b"AUTH LOGIN\r\n", b"DATA\r\n",
                                                           b"RCPT TO:<a@b>\r\n", tls, ehlo,
                                                           b"AUTH LOGIN\r\n", b"YWxpY2U=\r\n",
                                                           b"c2VjcmV0\r\n", env, body))


def server_more_seeds(w, ehlo, env, body):
    w("late_results", scfg(1 | 2 | 64, 0, 16) + chunks(ehlo, env, body + b"NOOP\r\n",
                                                        b"AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n",
                                                        b"QUIT\r\n"))
    w("late_result_timeout", scfg(1, 0, 16) + chunks(ehlo, env, body) + b"\0")
    w("message_reply", scfg(1, 0, 8) + chunks(ehlo, env, body, b"QUIT\r\n"))
    w("zero_limits", scfg(1, 0, 32) + chunks(ehlo, env, body, b"QUIT\r\n"))
    w("backpressure_close", scfg(1, 0, 64) + chunks(ehlo, b"NOOP\r\n", env))
    w("simple_commands", scfg(1, 0) + chunks(ehlo, b"VRFY\r\nVRFY postmaster\r\nHELP\r\nTURN\r\n"
                                             b"EXPN list\r\nETRN x\r\nNOOP\r\nRSET\r\n", b"QUIT\r\n"))
    w("greeting_delay", scfg(128 | 1, 0) + b"\0" + chunks(ehlo, env, body, b"QUIT\r\n"))
    w("help_flood", scfg(1, 0) + chunks(ehlo, b"HELP\r\n" * 42, b"QUIT\r\n"))
    w("line_over_buffer", scfg(1, 0) + chunks(ehlo, b"NOOP " + b"x" * 2100 + b"\r\n", b"QUIT\r\n"))
    w("bdat_split", scfg(1, 0) + chunks(ehlo, b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nBDAT 300 LAST\r\n",
                                        b"y" * 100, b"\r\n.z" * 40, b"w" * 80, b"QUIT\r\n"))
    w("bdat_too_big", scfg(1 | 16, 0) + chunks(ehlo, b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n"
                                               b"BDAT 400 LAST\r\n", b"v" * 200, b"v" * 200,
                                               b"QUIT\r\n"))
    w("xtext", scfg(1, 0) + chunks(ehlo, b"MAIL FROM:<a@b> AUTH=a+2Bb+3D BODY=7BIT\r\n",
                                   b"RSET\r\nMAIL FROM:<a@b> AUTH=a+2\r\n",
                                   b"MAIL FROM:<a@b> AUTH=a+zz\r\n", b"MAIL FROM:<a@b> AUTH=a+2z\r\n",
                                   b"MAIL FROM:<a@b> AUTH=a=b\r\n", b"MAIL FROM:<a@b> BODY=BINARY\r\n",
                                   b"QUIT\r\n"))
    w("utf8", scfg(1, 0) + chunks(ehlo, b"MAIL FROM:<a@b> SMTPUTF8\r\n",
                                  b"RCPT TO:<\xed\xa0\x80@b>\r\nRCPT TO:<\xf4\x90\x80\x80@b>\r\n"
                                  b"RCPT TO:<\xf0\x80\x80\xaf@b>\r\nRCPT TO:<\xe2\x82\xac@b>\r\n"
                                  b"RCPT TO:<a~{}|@b>\r\n", b"QUIT\r\n"))
    w("auth_b64", scfg(2, 0) + chunks(ehlo, b"AUTH PLAIN AGE/AGI/\r\n", b"AUTH PLAIN a=b=\r\n",
                                      b"AUTH PLAIN AG\x01\r\n", b"AUTH LOGIN\r\n", b"Y" * 1200 + b"\r\n",
                                      b"QUIT\r\n"))
    w("auth_late_timeout", scfg(2 | 64, 0, 16) + chunks(ehlo, b"AUTH PLAIN\r\n",
                                                         b"AGFsaWNlAHNlY3JldA==\r\n") + b"\0")
    w("helo_variants", scfg(1 | 8, 0) + chunks(b"HELO\r\n", b"HELO a b\r\n", b"EHLO\r\n",
                                               b"HELO client.example\r\n", env, b"a\0b\r\n.\r\n"))
    w("helo_8bit", scfg(1, 0) + chunks(b"HELO caf\xc3\xa9\r\n", b"EHLO caf\xc3\xa9\r\n", b"QUIT\r\n"))
    w("nul_close", scfg(1 | 8, 0) + chunks(ehlo, env, b"a\0b\r\n.\r\n", b"QUIT\r\n"))
    w("auth_b64_long", scfg(2, 0) + chunks(ehlo, b"AUTH PLAIN " + b"QUFB" * 270 + b"\r\n", b"QUIT\r\n"))
    w("rcpt_arena", scfg(1, 0) + chunks(ehlo, b"MAIL FROM:<a@b>\r\n",
                                        *[b"RCPT TO:<" + bytes([0x61 + i]) * 200 + b"@d>\r\n"
                                          for i in range(12)], b"QUIT\r\n"))
    w("addresses", scfg(1, 0) + chunks(ehlo, b"MAIL FROM:<" + b"a" * 300 + b"@b>\r\n",
                                       b"MAIL FROM:<\xc3\xa9@b>\r\n",
                                       b"MAIL FROM:<a@b> SIZE=99999999999\r\n",
                                       b"MAIL FROM:<\"q uoted\"@[127.0.0.1]>\r\n",
                                       b"RCPT TO:<Postmaster>\r\nRCPT TO:<\xc3\xa9@b>\r\n"
                                       b"RCPT TO:<" + b"c" * 300 + b"@d>\r\n",
                                       b"RSET\r\nMAIL FROM:<a@b> SMTPUTF8\r\nRCPT TO:<\xc3\xa9@b>\r\n"
                                       b"RCPT TO:<\xc3\x28@b>\r\nRCPT TO:<\xe0\x80\xaf@b>\r\n", b"QUIT\r\n"))

def server_seeds():
    w = lambda name, data: write("fuzz_server", name, data)
    ehlo = b"EHLO client.example\r\n"
    env = b"MAIL FROM:<a@send.example> SIZE=100 BODY=8BITMIME\r\nRCPT TO:<b@rcpt.example>\r\nDATA\r\n"
    body = b"Subject: hi\r\n\r\n..dot\r\nbody\r\n.\r\n"
    w("data", scfg(1, 0) + chunks(ehlo, env, body, b"QUIT\r\n"))
    w("data_split", scfg(1, 7) + chunks(ehlo, env) + chunks(*[bytes([c]) for c in body]))
    w("two_messages", scfg(1, 0) + chunks(ehlo, env, body, env, body, b"RSET\r\nNOOP\r\nQUIT\r\n"))
    w("helo", scfg(1, 0) + chunks(b"HELO client.example\r\n", env, body, b"QUIT\r\n"))
    w("bdat", scfg(1, 0) + chunks(ehlo, b"MAIL FROM:<>\r\nRCPT TO:<b@rcpt.example>\r\n"
                                          b"BDAT 7\r\n.a\r\nb\r\nBDAT 3 LAST\r\n.\r\n", b"QUIT\r\n"))
    w("bdat_rset", scfg(1, 0) + chunks(ehlo, b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nBDAT 2\r\nabRSET\r\n"))
    w("smuggle_lf", scfg(1, 0) + chunks(ehlo, env, b"a\r\n\n.\nMAIL FROM:<x@y>\r\n.\r\n", b"QUIT\r\n"))
    w("smuggle_cr", scfg(1 | 8, 0) + chunks(ehlo, env, b"a\r\r.\r\rMAIL FROM:<x@y>\r\n.\r\n"))
    w("smuggle_end", scfg(1, 0) + chunks(ehlo, env, b"a\r\n.\nRCPT TO:<x@y>\r\n\r\n.\r\nQUIT\r\n"))
    w("auth_plain", scfg(2 | 64, 0) + chunks(ehlo, b"AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n", env, body))
    w("auth_login", scfg(2, 0) + chunks(ehlo, b"AUTH LOGIN\r\n", b"YWxpY2U=\r\n", b"c2VjcmV0\r\n", env))
    w("auth_cancel", scfg(2, 0) + chunks(ehlo, b"AUTH PLAIN\r\n", b"*\r\n", b"AUTH PLAIN =\r\n"))
    w("relay_denied", scfg(0, 0) + chunks(ehlo, env, b"QUIT\r\n"))
    w("pipelining_violation", scfg(1, 0) + chunks(ehlo + b"MAIL FROM:<a@b>\r\n"))
    w("early_talker", scfg(128 | 1, 0) + chunks(ehlo))
    w("bad_lines", scfg(1 | 16, 3) + chunks(ehlo, b"MAIL FROM:<a\0b@c>\r\n", b"RCPT TO:<x@y>\nDATA\r\n",
                                               b"NOOP " + b"x" * 100 + b"\r\n", b"VRFY x\r\nBOGUS\r\n"))
    w("params", scfg(1, 0) + chunks(ehlo, b"MAIL FROM:<a@b> AUTH=<>\r\n", b"MAIL FROM:<a@b> SIZE=\r\n",
                                       b"MAIL FROM:<@route,@r2:a@b> SMTPUTF8 ENVID=x+2By\r\n",
                                       b"RCPT TO:<c@d> NOTIFY=NEVER ORCPT=rfc822;c@d\r\n"))
    w("many_rcpts", scfg(1 | 16, 0) + chunks(ehlo, b"MAIL FROM:<a@b>\r\n" + b"RCPT TO:<c@d>\r\n" * 5
                                                 + b"DATA\r\n", b"x" * 50 + b"\r\n.\r\n"))
    w("backpressure", scfg(1, 128) + chunks(ehlo, env))
    w("timeout", scfg(1, 0) + chunks(ehlo, env) + b"\0")
    w("spool_fails", scfg(1 | 32, 0) + chunks(ehlo, env, body, b"QUIT\r\n"))
    server_tls_seeds(w, ehlo, env, body)
    server_more_seeds(w, ehlo, env, body)
    # Regression (docs/fuzzing.md "Findings", tests/smtp/test_fuzz_regress.c):
    # a command line past the 2048-byte line buffer in 255-byte reads.
    w("regress-line-over-buffer", scfg(1, 0) + chunks(ehlo) + chunks(b"NOOP " + b"x" * 2300 + b"\r\n")
      + chunks(b"QUIT\r\n"))


def main():
    server_seeds()
    reply_seeds()
    dot_seeds()
    record_seeds()
    client_seeds()
    return 0


if __name__ == "__main__":
    sys.exit(main())
