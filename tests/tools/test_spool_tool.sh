#!/bin/bash
# test_spool_tool.sh - ringmail-spool end to end.
#
#   test_spool_tool.sh BUILD_DIR
#
# make_spool writes a known spool (6 messages, 12 recipients, 7 journal
# outcomes) through the real spool into a scratch directory under the build
# directory (the spool refuses tmpfs, so never /tmp). Then:
#   - ls, ls --json: every message, every recipient state;
#   - show, show --json: envelope, and the message un-dot-stuffed, exactly;
#   - stats --json: the counts; verify: exit 0;
#   - nothing in the spool changed (read-only);
#   - errors: missing spool (1), unknown queue id (1), bad usage (64);
#   - one flipped byte in a message record: verify exits 2 and names the
#     record's offset; ls still lists the other messages;
#   - a torn, truncated or zeroed tail: verify exits 0 (a note at most).
# Exit 77 (skipped) when make_spool finds no io_uring.
set -euo pipefail

BUILD=${1:?usage: test_spool_tool.sh BUILD_DIR}
TOOL="$BUILD/tools/ringmail-spool"
MAKE_SPOOL="$BUILD/tests/tools/make_spool"
WORK="$BUILD/tests/tools/scratch-spool-tool-$$"
SPOOL="$WORK/spool"
rm -rf "$WORK"
mkdir -p "$WORK/expect"
trap 'rm -rf "$WORK"' EXIT

fail() {
	echo "not ok: $*" >&2
	exit 1
}
pass() { echo "ok: $*"; }

# run ARGS...: ringmail-spool with stdout in $WORK/out, stderr in
# $WORK/err and the exit status in $status, without tripping set -e.
status=0
run() {
	set +e
	"$TOOL" "$@" >"$WORK/out" 2>"$WORK/err"
	status=$?
	set -e
}
expect_status() {
	if [ "$status" -ne "$1" ]; then
		echo "--- stdout" >&2; cat "$WORK/out" >&2
		echo "--- stderr" >&2; cat "$WORK/err" >&2
		fail "$2: exit status $status, expected $1"
	fi
}
expect_out() {
	grep -qF -- "$1" "$WORK/out" || { cat "$WORK/out" >&2; fail "$2: no '$1' in stdout"; }
}
expect_err() {
	grep -qF -- "$1" "$WORK/err" || { cat "$WORK/err" >&2; fail "$2: no '$1' in stderr"; }
}
# json_assert EXPR: EXPR holds for d, the JSON document in $WORK/out.
json_assert() {
	python3 -c 'import json, sys
d = json.load(open(sys.argv[1], "rb"))
assert eval(sys.argv[2]), d' "$WORK/out" "$1" || fail "json: $1"
}
# Message lines in an ls output.
message_lines() { grep -c '^[0-9a-f]\{26\}  ' "$WORK/out" || true; }
# Every file of the spool with its size, mode and content hash.
snapshot() {
	(cd "$SPOOL" && find . -printf '%p %s %m\n' | sort &&
		find . -type f -print0 | sort -z | xargs -0 sha256sum)
}

# ---- build the spool ----
made=0
"$MAKE_SPOOL" "$SPOOL" "$WORK/expect" >"$WORK/made" || made=$?
if [ "$made" -eq 77 ]; then
	echo "skip: io_uring unavailable"
	exit 77
fi
[ "$made" -eq 0 ] || fail "make_spool exited $made"
declare -a ID SEG OFF SIZE
while read -r word n id seg off size _rcpts; do
	[ "$word" = message ] || continue
	ID[n]=$id SEG[n]=$seg OFF[n]=$off SIZE[n]=$size
done <"$WORK/made"
[ "${#ID[@]}" -eq 6 ] || fail "make_spool reported ${#ID[@]} messages"
SEGNAME=$(basename "${SEG[0]}")
for n in 1 2 3 4 5; do
	[ "${SEG[n]}" = "${SEG[0]}" ] || fail "messages in several segments"
done
before=$(snapshot)

# ---- ls ----
run ls -d "$SPOOL"
expect_status 0 "ls"
[ "$(message_lines)" -eq 6 ] || fail "ls: not 6 message lines"
for n in 0 1 2 3 4 5; do expect_out "${ID[n]}  " "ls lists message $n"; done
expect_out "${ID[0]}  2024-05-01T12:00:00Z  " "ls: creation time"
expect_out "<sender0@example.org>  <rcpt0.0@example.net> delivered" "ls: delivered"
expect_out "<rcpt1.0@example.net> bounced, <rcpt1.1@example.net> deferred until \
2024-05-01T13:00:00Z" "ls: bounced, deferred"
expect_out "<rcpt2.0@example.net> delivered, <rcpt2.1@example.net> expired, \
<rcpt2.2@example.net> pending" "ls: final delivery overrides deferral, expired, pending"
expect_out "${ID[5]}  2024-05-01T12:05:00Z" "ls: last message"
grep "^${ID[5]}" "$WORK/out" | grep -qF "  <>  <rcpt5.0@example.net> pending" ||
	fail "ls: null sender"
expect_out "-- 6 messages, 12 recipients (8 not final), 1 shard" "ls: summary"
pass "ls lists 6 messages with their recipient states"

run --json ls -d "$SPOOL"
expect_status 0 "ls --json"
python3 - "$WORK/out" "${ID[@]}" <<'EOF' || fail "ls --json"
import json, sys
d = json.load(open(sys.argv[1], "rb"))
ids = sys.argv[2:]
msgs = d["messages"]
assert [m["queue_id"] for m in msgs] == ids, [m["queue_id"] for m in msgs]
assert d["count"] == 6 and d["recipients"] == 12 and d["recipients_live"] == 8, d
states = [[r["state"] for r in m["recipients"]] for m in msgs]
assert states == [["delivered"], ["bounced", "deferred"],
                  ["delivered", "expired", "pending"], ["pending"],
                  ["pending", "pending"], ["pending", "pending", "pending"]], states
assert msgs[1]["recipients"][1]["next_attempt"] == "2024-05-01T13:00:00Z"
assert msgs[0]["sender"] == "sender0@example.org" and msgs[5]["sender"] == ""
assert msgs[0]["created"] == "2024-05-01T12:00:00Z"
assert msgs[0]["expires"] == "2024-05-06T12:00:00Z"
EOF
pass "ls --json"

# ---- show ----
run show "${ID[2]}" -d "$SPOOL"
expect_status 0 "show"
expect_out "queue id:   ${ID[2]}" "show: id"
expect_out "sender:     <sender2@example.org>" "show: sender"
expect_out "recipient:  <rcpt2.0@example.net> delivered" "show: recipient 0"
expect_out "recipient:  <rcpt2.1@example.net> expired" "show: recipient 1"
expect_out "recipient:  <rcpt2.2@example.net> pending" "show: recipient 2"
expect_out "created:    2024-05-01T12:02:00Z" "show: created"
python3 - "$WORK/out" "$WORK/expect/2.eml" <<'EOF' || fail "show: message not exact"
import sys
out = open(sys.argv[1], "rb").read()
want = open(sys.argv[2], "rb").read().replace(b"\r\n", b"\n")
head = out.index(b"*** HEADERS ***\n") + len(b"*** HEADERS ***\n")
mid = out.index(b"*** BODY ***\n")
got = out[head:mid] + b"\n" + out[mid + len(b"*** BODY ***\n"):]
assert got == want, (got, want)
assert b"\n.leading dot\n..two leading dots\n.\n" in got
EOF
pass "show prints the envelope and the message un-stuffed, exactly"

for n in 0 2 5; do
	run --json show "${ID[n]}" -d "$SPOOL"
	expect_status 0 "show --json $n"
	python3 - "$WORK/out" "$WORK/expect/$n.eml" "${ID[n]}" "${SIZE[n]}" <<'EOF' ||
import codecs, json, sys
# The tool writes each byte of an invalid UTF-8 sequence as \u00XX.
codecs.register_error("bytes_as_latin1",
                      lambda e: (e.object[e.start:e.end].decode("latin-1"), e.end))
d = json.load(open(sys.argv[1], "rb"))
want = open(sys.argv[2], "rb").read().decode("utf-8", "bytes_as_latin1")
assert d["headers"] + "\r\n" + d["body"] == want, (d["headers"], d["body"], want)
assert d["queue_id"] == sys.argv[3]
assert "caf\u00e9 \u00ff raw byte" in d["body"]
assert 'tab\there "quoted" back\\slash' in d["body"]
assert d["size"] < int(sys.argv[4])
EOF
		fail "show --json $n"
done
pass "show --json gives headers and body exactly, escaped"

run show "${ID[0]:0:26}" -d "$SPOOL" --shard 0
expect_status 0 "show --shard 0"
expect_out "recipient:  <rcpt0.0@example.net> delivered" "show: a deferral never undoes delivery"
bad_offset=$(printf '%s%08x' "${ID[0]:0:18}" $((OFF[0] + 8)))
run show "$bad_offset" -d "$SPOOL"
expect_status 1 "show of an id inside a record"
expect_err "no message $bad_offset" "show: unknown id"
run show "00ffffffffffffffff00000000" -d "$SPOOL"
expect_status 1 "show of an id in a missing segment"
expect_err "no message 00ffffffffffffffff00000000" "show: missing segment"
run show "not-a-queue-id" -d "$SPOOL"
expect_status 64 "show of a malformed id"
expect_err "is not a queue id" "show: malformed id"
pass "show: unknown ids exit 1 with one clear line"

# ---- stats ----
run --json stats -d "$SPOOL"
expect_status 0 "stats --json"
python3 - "$WORK/out" "${ID[1]}" "${SIZE[@]}" <<'EOF' || fail "stats --json"
import json, sys
d = json.load(open(sys.argv[1], "rb"))
assert d["shards"] == 1 and d["messages"] == 6 and d["outcomes"] == 7, d
assert d["records"] == 13, d
assert d["recipients"] == {"total": 12, "pending": 7, "delivered": 2, "bounced": 1,
                           "expired": 1, "deferred": 1}, d["recipients"]
assert d["bytes"]["records"] == sum(int(s) for s in sys.argv[3:]) + 7 * 72, d["bytes"]
assert 0 < d["bytes"]["message_bodies"] < d["bytes"]["records"] <= d["bytes"]["segment_files"]
assert d["message_segments"] >= 1 and d["journal_segments"] >= 1, d
# Message 0 is wholly delivered: the oldest still queued is message 1.
assert d["oldest"]["queue_id"] == sys.argv[2], d["oldest"]
assert d["oldest"]["created"] == "2024-05-01T12:01:00Z" and d["oldest"]["age_s"] > 0
assert d["corrupt_spans"] == 0 and d["holes"] == 0 and d["torn_tails"] == 0, d
assert d["scan_duration_ms"] >= 0
EOF
run stats -d "$SPOOL"
expect_status 0 "stats"
expect_out "records:           13 (6 messages, 7 outcomes)" "stats: records"
expect_out "oldest queued:     ${ID[1]}  2024-05-01T12:01:00Z" "stats: oldest"
pass "stats counts match"

# ---- verify ----
run verify -d "$SPOOL"
expect_status 0 "verify of a clean spool"
expect_out "0 corrupt spans, 0 holes, 0 torn tails: OK" "verify: OK"
expect_out "journal format: 0 outcomes of version 1 (no attempt count), 7 of version 2; \
0 spans of an unknown version" "verify: outcome versions"
run --json verify -d "$SPOOL"
expect_status 0 "verify --json"
json_assert 'd["ok"] and d["damage"] == [] and d["messages"] == 6 and d["outcomes"] == 7'
# Journal format (docs/spool-format.md 2.2): outcomes are written at version 2.
json_assert 'd["outcomes_v2"] == 7 and d["outcomes_v1"] == 0 and d["unknown_versions"] == 0'
pass "verify of a clean spool exits 0"

[ "$(snapshot)" = "$before" ] || fail "the spool changed under a read-only tool"
[ -z "$(ls -A "$SPOOL/0/quarantine")" ] || fail "quarantine/ is not empty"
pass "nothing in the spool changed"

# ---- errors and usage ----
run ls -d "$WORK/no-such-spool"
expect_status 1 "missing spool"
[ "$(wc -l <"$WORK/err")" -eq 1 ] || fail "missing spool: not one line on stderr"
[ ! -s "$WORK/out" ] || fail "missing spool: output on stdout"
expect_err "cannot open spool directory $WORK/no-such-spool" "missing spool"
run ls -d "$SPOOL" --shard 9
expect_status 1 "missing shard"
expect_err "no shard 9" "missing shard"
for args in "" "frobnicate" "show" "ls extra" "--shard 256 ls" "--shard x ls" "--bogus ls"; do
	# shellcheck disable=SC2086 # word splitting is the point
	run $args -d "$SPOOL"
	expect_status 64 "usage: '$args'"
	expect_err "usage: ringmail-spool" "usage text for '$args'"
done
run --help
expect_status 0 "--help"
expect_out "usage: ringmail-spool" "--help"
pass "errors exit 1 with one line; bad usage exits 64 with the usage"

# ---- a flipped byte in the middle of a message record ----
cp "${SEG[0]}" "$WORK/segment.orig"
flip=$((OFF[2] + SIZE[2] / 2))
python3 - "${SEG[0]}" "$flip" <<'EOF'
import sys
with open(sys.argv[1], "r+b") as f:
    f.seek(int(sys.argv[2]))
    b = f.read(1)
    f.seek(int(sys.argv[2]))
    f.write(bytes([b[0] ^ 0x20]))
EOF
run verify -d "$SPOOL"
expect_status 2 "verify of a corrupt record"
expect_out "CORRUPT: shard 0 msg/$SEGNAME offset ${OFF[2]} size " "verify names the span"
expect_out ": corrupt, bad crc (" "verify gives the reason"
[ "$(grep -c '^CORRUPT:' "$WORK/out")" -eq 1 ] || fail "verify: not exactly one corrupt span"
run --json verify -d "$SPOOL"
expect_status 2 "verify --json of a corrupt record"
python3 - "$WORK/out" "${OFF[2]}" "$SEGNAME" <<'EOF' || fail "verify --json corrupt"
import json, sys
d = json.load(open(sys.argv[1], "rb"))
assert not d["ok"] and d["corrupt_spans"] == 1, d
(span,) = d["damage"]
assert span["kind"] == "corrupt" and span["offset"] == int(sys.argv[2]), span
assert span["log"] == "msg" and span["segment"] + ".seg" == sys.argv[3], span
assert span["reason"] == "bad crc" and span["fails"], span
EOF
run ls -d "$SPOOL"
expect_status 0 "ls of a spool with a corrupt record"
[ "$(message_lines)" -eq 5 ] || fail "ls: not 5 messages around the damage"
! grep -q "^${ID[2]}" "$WORK/out" || fail "ls lists the corrupt message"
expect_err "1 corrupt span skipped" "ls notes the damage"
run show "${ID[2]}" -d "$SPOOL"
expect_status 1 "show of a corrupt message"
expect_err "is unreadable" "show of a corrupt message"
run --json stats -d "$SPOOL"
expect_status 0 "stats of a corrupt spool"
json_assert 'd["corrupt_spans"] == 1 and d["messages"] == 5'
pass "a flipped byte: verify exits 2 and names offset ${OFF[2]}"

# ---- torn, truncated and zeroed tails: never acknowledged, not failures ----
# Message 5 is alone in the last commit and spans several blocks.
tear() { # tear MODE: the last commit's first block survives, or nothing of it
	cp "$WORK/segment.orig" "${SEG[0]}"
	python3 - "${SEG[0]}" "$1" "${OFF[5]}" <<'EOF'
import os, sys
path, mode, off = sys.argv[1], sys.argv[2], int(sys.argv[3])
size = os.path.getsize(path)
with open(path, "r+b") as f:
    if mode == "truncate":
        f.truncate(off + 4096)
    else:
        start = off + 4096 if mode == "torn" else off
        f.seek(start)
        f.write(bytes(size - start))
EOF
}
for mode in torn truncate; do
	tear "$mode"
	run verify -d "$SPOOL"
	expect_status 0 "verify of a $mode tail"
	expect_out "note: shard 0 msg/$SEGNAME offset ${OFF[5]} size " "verify notes the $mode tail"
	expect_out ": torn tail, " "verify: $mode tail kind"
	! grep -q "^CORRUPT" "$WORK/out" || fail "$mode tail reported as corruption"
	run ls -d "$SPOOL"
	expect_status 0 "ls after a $mode tail"
	[ "$(message_lines)" -eq 5 ] || fail "ls after a $mode tail"
	! grep -q "^${ID[5]}" "$WORK/out" || fail "ls lists the torn message"
done
tear zero
run verify -d "$SPOOL"
expect_status 0 "verify of a zeroed tail"
expect_out "0 corrupt spans, 0 holes, 0 torn tails: OK" "verify: a zeroed tail is a clean end"
pass "torn, truncated and zeroed tails: verify exits 0"
echo "all ringmail-spool checks passed"
