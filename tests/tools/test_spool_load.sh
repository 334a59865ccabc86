#!/bin/bash
# test_spool_load.sh - ringmail-spool load end to end.
#
#   test_spool_load.sh BUILD_DIR
#
# Loads 2000 messages over 2 shards and 50 domains into a scratch spool
# under the build directory (the spool refuses tmpfs, so never /tmp), then
# reads it back with the inspector:
#   - load --json: 2000 messages and recipients, per-shard counts;
#   - stats --json: 2000 messages, every recipient pending, no damage;
#   - ls --shard N: only domains that shard N owns by the daemon's rule
#     (domain_owner, which calls eng_domain_owner), counts as load said;
#   - show --json of a few ids: the headers, and the message re-stuffed
#     plus ".\r\n" is in the segment file at the id's offset, ending
#     CRLF.CRLF, with the size show gives;
#   - the same seed gives the same recipients; a second load appends;
#   - errors: bad option values and load options on other commands (64),
#     a spool directory that cannot be created (1).
# Exit 77 (skipped) when io_uring is unavailable.
set -euo pipefail

BUILD=${1:?usage: test_spool_load.sh BUILD_DIR}
TOOL="$BUILD/tools/ringmail-spool"
OWNER="$BUILD/tests/tools/domain_owner"
WORK="$BUILD/tests/tools/scratch-spool-load-$$"
SPOOL="$WORK/spool"
rm -rf "$WORK"
mkdir -p "$WORK"
trap 'rm -rf "$WORK"' EXIT

fail() {
	echo "not ok: $*" >&2
	exit 1
}
pass() { echo "ok: $*"; }

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
expect_err() {
	grep -qF -- "$1" "$WORK/err" || { cat "$WORK/err" >&2; fail "$2: no '$1' in stderr"; }
}
json_assert() {
	python3 -c 'import json, sys
d = json.load(open(sys.argv[1], "rb"))
assert eval(sys.argv[2]), d' "$WORK/out" "$1" || fail "json: $1"
}

# ---- load ----
LOAD=(--shards 2 --count 2000 --domains 50 --size 2048 --seed 7 --segment-size 1048576)
run --json -d "$SPOOL" load "${LOAD[@]}"
if [ "$status" -ne 0 ] && grep -q "ring_create" "$WORK/err"; then
	cat "$WORK/err"
	echo "skip: io_uring unavailable"
	exit 77
fi
expect_status 0 "load"
cp "$WORK/out" "$WORK/load.json"
json_assert 'd["messages"] == 2000 and d["recipients"] == 2000 and d["existing_messages"] == 0'
json_assert '[s["shard"] for s in d["shards"]] == [0, 1]'
json_assert 'sum(s["messages"] for s in d["shards"]) == 2000'
json_assert 'all(s["messages"] > 0 for s in d["shards"])'
json_assert 'd["bytes"] == sum(s["bytes"] for s in d["shards"]) and d["msgs_per_s"] > 0'
json_assert '1500 * 2000 < d["bytes"] <= 2048 * 2000 and d["elapsed_s"] > 0'
SHARD_COUNT=()
for n in 0 1; do
	SHARD_COUNT[n]=$(python3 -c 'import json, sys
print(json.load(open(sys.argv[1]))["shards"][int(sys.argv[2])]["messages"])' \
		"$WORK/load.json" "$n")
done
pass "load wrote 2000 messages: ${SHARD_COUNT[0]} to shard 0, ${SHARD_COUNT[1]} to shard 1"

# ---- stats ----
run --json -d "$SPOOL" stats
expect_status 0 "stats"
json_assert 'd["shards"] == 2 and d["messages"] == 2000 and d["outcomes"] == 0'
json_assert 'd["recipients"]["total"] == 2000 and d["recipients"]["pending"] == 2000'
json_assert 'd["corrupt_spans"] == 0 and d["holes"] == 0 and d["torn_tails"] == 0'
run -d "$SPOOL" verify
expect_status 0 "verify of a loaded spool"
pass "stats: 2000 messages, every recipient pending; verify OK"

# ---- ls per shard: only the shard's own domains ----
: >"$WORK/domains.all"
for n in 0 1; do
	run -d "$SPOOL" --shard "$n" ls
	expect_status 0 "ls --shard $n"
	cp "$WORK/out" "$WORK/ls.$n"
	lines=$(grep -c '^[0-9a-f]\{26\}  ' "$WORK/ls.$n" || true)
	[ "$lines" -eq "${SHARD_COUNT[n]}" ] ||
		fail "ls --shard $n: $lines messages, load said ${SHARD_COUNT[n]}"
	# Every queue id names shard n (its first two hex digits).
	others=$(grep '^[0-9a-f]\{26\}  ' "$WORK/ls.$n" | grep -cv "^$(printf '%02x' "$n")" || true)
	[ "$others" -eq 0 ] || fail "ls --shard $n: $others queue ids of another shard"
	grep -o '@d[0-9]*\.test>' "$WORK/ls.$n" | tr -d '@>' | sort -u >"$WORK/domains.$n"
	[ -s "$WORK/domains.$n" ] || fail "ls --shard $n: no domains"
	# shellcheck disable=SC2046 # one argument per domain
	"$OWNER" 2 $(cat "$WORK/domains.$n") >"$WORK/owners.$n" ||
		fail "tool and engine disagree on an owner"
	bad=$(awk -v n="$n" '$2 != n' "$WORK/owners.$n")
	[ -z "$bad" ] || fail "shard $n holds domains it does not own: $bad"
	cat "$WORK/domains.$n" >>"$WORK/domains.all"
done
distinct=$(sort -u "$WORK/domains.all" | wc -l)
[ "$distinct" -eq 50 ] || fail "$distinct distinct domains, expected 50"
pass "ls: each shard holds only the domains it owns (50 domains in all)"

# ---- show: wire form, CRLF.CRLF ----
ids=$( (head -3 "$WORK/ls.0"; tail -n 2 "$WORK/ls.0" | head -1; head -2 "$WORK/ls.1") |
	grep -o '^[0-9a-f]\{26\}')
[ "$(echo "$ids" | wc -l)" -eq 6 ] || fail "not 6 ids to show: $ids"
for id in $ids; do
	run --json -d "$SPOOL" show "$id"
	expect_status 0 "show $id"
	python3 - "$WORK/out" "$SPOOL" <<'PY' || fail "show $id: wire form"
import json, re, sys
d = json.load(open(sys.argv[1], "rb"))
message = (d["headers"] + "\r\n" + d["body"]).encode()
rcpt = d["recipients"][0]["address"]
assert d["sender"] == "loader@load.test", d["sender"]
assert d["recipients"][0]["state"] == "pending"
assert re.fullmatch(r"user\d+@d\d+\.test", rcpt), rcpt
for h in ("From: <loader@load.test>\r\n", "To: <%s>\r\n" % rcpt, "Subject: load message ",
          "Date: ", "Message-ID: <"):
    assert h in d["headers"], (h, d["headers"])
assert d["body"].endswith("\r\n") and "\n" not in d["body"].replace("\r\n", "")
assert all(len(l) <= 78 for l in d["body"].split("\r\n"))
# Re-stuff (RFC 5321 4.5.2) and end with ".\r\n": the bytes in the segment.
lines = message.split(b"\r\n")[:-1]
wire = b"".join((b"." if l.startswith(b".") else b"") + l + b"\r\n" for l in lines) + b".\r\n"
assert wire.endswith(b"\r\n.\r\n")
assert len(wire) == d["size"], (len(wire), d["size"])
seg = "%s/%d/msg/%s.seg" % (sys.argv[2], d["shard"], d["segment"])
with open(seg, "rb") as f:
    f.seek(d["offset"])
    record = f.read(len(wire) + 4096)
assert wire in record, "the wire body is not in the record"
PY
done
pass "show: bodies are in wire form and end with CRLF.CRLF"

python3 - "$SPOOL" <<'PY' || fail "no dot-stuffed line"
import glob, sys
data = b"".join(open(p, "rb").read() for p in sorted(glob.glob(sys.argv[1] + "/0/msg/*.seg")))
assert b"\r\n.." in data
PY
pass "some lines are dot-stuffed"

# ---- same seed, same messages; a second load appends ----
run -d "$WORK/again" load "${LOAD[@]}"
expect_status 0 "load again"
grep -q "^loaded 2000 messages, 2000 recipients, " "$WORK/out" || fail "load: summary line"
for n in 0 1; do
	"$TOOL" -d "$SPOOL" --shard "$n" ls | grep -o '<user[0-9]*@d[0-9]*\.test>' | sort >"$WORK/a"
	"$TOOL" -d "$WORK/again" --shard "$n" ls | grep -o '<user[0-9]*@d[0-9]*\.test>' |
		sort >"$WORK/b"
	cmp -s "$WORK/a" "$WORK/b" || fail "shard $n: the same seed gave other recipients"
done
rm -rf "$WORK/again"
pass "the same seed gives the same recipients in the same shards"

run --json -d "$SPOOL" load --shards 2 --count 100 --domains 3 --zipf 1.2 --recipients 3 \
	--segment-size 1048576
expect_status 0 "second load"
json_assert 'd["messages"] == 100 and d["recipients"] == 300 and d["existing_messages"] == 2000'
run --json -d "$SPOOL" stats
json_assert 'd["messages"] == 2100 and d["recipients"]["pending"] == 2300'
pass "a second load appends (2100 messages)"

# ---- errors ----
for args in "load --shards 0" "load --shards 257" "load --count 0" "load --count x" \
	"load --zipf -1" "load --size 1" "load --recipients 1001" "load --segment-size 1000" \
	"load --sender a<b" "load extra" "--shard 0 load" "ls --count 5" "stats --shards 2"; do
	# shellcheck disable=SC2086 # word splitting is the point
	run -d "$SPOOL" $args
	expect_status 64 "usage: '$args'"
	expect_err "usage: ringmail-spool" "usage text for '$args'"
done
run -d "$WORK/no/such/parent" load --count 1
expect_status 1 "load into a missing parent"
expect_err "cannot create spool directory $WORK/no/such/parent" "load: missing parent"
pass "errors: bad load options exit 64, an uncreatable spool directory exits 1"
echo "all ringmail-spool load checks passed"
