#!/usr/bin/env bash
# The ringmail daemon's start-up, signals and loud start-up errors, end to
# end: the real binary, a real spool on disk. Synchronises on the lines
# the daemon prints (read through a pipe, bounded by a timeout), never on
# sleeps. Prints TAP.
#
#   test_daemon.sh BUILD_DIR
set -uo pipefail
# Sourced before any cd: the path may be relative.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
build="$1"
ringmail="$build/engine/ringmail"
make_spool="$build/tests/tools/make_spool"
work="$build/test-scratch-daemon-$$"
rm -rf "$work"
mkdir -p "$work"
trap 'rm -rf "$work"' EXIT
cd "$work"


echo "TAP version 13"

# 1. Built-in default: starts in the working directory, stops cleanly.
check "starts on the built-in configuration" "start"
check "the spool is created in the working directory" "[ -d ringmail-spool/0/msg ] && [ -d ringmail-spool/0/journal ]"
kill -HUP "$DPID"
check "SIGHUP on the built-in configuration is explained" "expect '*nothing to reload*'"
check "SIGTERM stops it with exit 0" "stop"

# 2. Recovery: a spool written by the real spool code, 8 live recipients.
rm -rf spool
mkdir -p "$work/expect"
if "$make_spool" "$work/spool" "$work/expect" >/dev/null; then
	# No route: the domains are looked up; a resolver port on loopback
	# where nothing answers makes every lookup TEMPFAIL (deferred, never
	# bounced) and keeps the test off the network.
	cat >ringmail.conf <<CONF
[engine]
shards = 1
spool_dir = $work/spool
dns_servers = 127.0.0.1:9
# No DSNs for the expired ones: they would be new live recipients.
dsn = no
CONF
	check "starts on a spool left by another run" "start -c ringmail.conf"
	check "start-up line counts the live recipients" "[[ \"\$started\" == *'8 recipients to deliver'* ]]"
	# Reload: a hot change is adopted, a restart-only change is named.
	cat >>ringmail.conf <<CONF
[domain example.net]
max_connections = 3
CONF
	kill -HUP "$DPID"
	check "SIGHUP adopts a destination change" "expect '*configuration reloaded*'"
	sed -i 's/shards = 1/shards = 2/' ringmail.conf
	kill -HUP "$DPID"
	check "SIGHUP names a change that needs a restart" "expect '*shards*needs a restart*'"
	check "SIGTERM after reloads exits 0" "stop"
	# The fixture's messages are from 2024: recipients deferred (DNS points
	# at a dead port) are past max_queue_lifetime and expire (their
	# segments are then reclaimed). None may be lost: those still live in
	# the spool plus those logged as expired are the 8.
	live=$("$build/tools/ringmail-spool" -d "$work/spool" --json stats |
		python3 -c 'import json,sys; r=json.load(sys.stdin)["recipients"]; print(r["pending"]+r["deferred"])')
	expired=$(grep -c '"type":"Expiration"' ringmail-delivery.log 2>/dev/null)
	check "the 8 live recipients are live or logged as expired, none lost" \
		"[ \$((live + expired)) -eq 8 ]"
else
	echo "# make_spool unavailable (no io_uring?)"
fi

# 3. Loud start-up errors: one line, non-zero exit.
printf '[engine]\nshards = 2\nbogus = 1\n' >bad.conf
out=$("$ringmail" -c bad.conf 2>&1); rc=$?
check "unknown key: exit 1" "[ $rc -eq 1 ]"
check "unknown key: one line naming file, line and key" \
	"[ \"\$(printf '%s\n' \"\$out\" | wc -l)\" -eq 1 ] && [[ \"\$out\" == *'bad.conf:3: [engine] bogus'* ]]"
out=$("$ringmail" -c missing.conf 2>&1); rc=$?
check "missing file: exit 1 with its name" "[ $rc -eq 1 ] && [[ \"\$out\" == *missing.conf* ]]"
check "-t checks a good file" "\"$ringmail\" -t -c ringmail.conf >/dev/null 2>&1 || [ ! -f ringmail.conf ]"
out=$("$ringmail" -x 2>&1); rc=$?
check "bad usage: exit 64" "[ $rc -eq 64 ]"
if [ "$(stat -f -c %T /dev/shm 2>/dev/null)" = tmpfs ]; then
	printf '[engine]\nshards = 1\nspool_dir = /dev/shm/ringmail-test-%s\n' "$$" >shm.conf
	out=$("$ringmail" -c shm.conf 2>&1); rc=$?
	rm -rf "/dev/shm/ringmail-test-$$"
	check "spool on tmpfs: refused with exit 1" "[ $rc -eq 1 ] && [[ \"\$out\" == *tmpfs* ]]"
fi

echo "1..$n"
[ $failed -eq 0 ]
