# bench/postfix.sh - a private Postfix instance for the benchmarks
# (bench_inject.sh, bench_e2e.sh). Sourced after bench/lib.sh, not run.
#
# Nothing here touches the system's Postfix: the instance has its own
# configuration directory (postconf -c / postfix -c), queue_directory,
# data_directory and maillog_file, all under PF_DIR, and one smtpd on
# 127.0.0.1:PORT (never port 25). It relays only: no local delivery
# (mydestination empty, local_transport and default_transport are error:),
# clients from 127.0.0.0/8 only, every destination domain routed by
# transport_maps (texthash, no postmap needed) to an IP literal, DNS off.
# The queue is Postfix's normal durable queue (cleanup fsyncs each queue
# file before smtpd answers 250), with the default process limits.
#
#   pf_init DIR PORT      write DIR/etc/{main.cf,master.cf,transport}
#   pf_set KEY=VALUE...   change main.cf (postconf -c -e)
#   pf_route DOMAIN HOST:PORT   append a transport_maps entry
#   pf_start / pf_stop    start, stop (waits until the master has gone)
#   pf_queue_count        queue files in maildrop/incoming/active/deferred/hold
#   pf_wait_empty SECS    wait (bounded) until the queue is empty
#   pf_cpu_s              CPU seconds of the whole instance so far
#   pf_rss_kb             resident memory of the whole instance now
#   pf_pss_kb             the same, shared pages split between processes
#
# Invariant: after pf_stop returns, no process of the instance runs.
# pf_stop is safe to call when nothing was started (cleanup traps).

PF_DIR=""
PF_CONF=""
PF_QUEUE=""
PF_MASTER_PID=""

# pf_init DIR PORT: a fresh instance directory with its configuration.
pf_init() {
	PF_DIR="$1"
	local port="$2"
	PF_CONF="$PF_DIR/etc"
	PF_QUEUE="$PF_DIR/queue"
	mkdir -p "$PF_CONF" "$PF_QUEUE" "$PF_DIR/data" || return 1
	# The daemons run as the postfix user and must reach the queue.
	chmod 755 "$PF_DIR"
	local d="$PF_DIR"
	while [ "$d" != / ] && [ "$d" != /var/tmp ] && [ "$d" != /tmp ]; do
		chmod o+x "$d" 2>/dev/null
		d=$(dirname "$d")
	done
	chown postfix "$PF_DIR/data"
	: >"$PF_CONF/transport"
	cat >"$PF_CONF/main.cf" <<EOF
# Private benchmark instance written by bench/postfix.sh.
compatibility_level = 3.6
queue_directory = $PF_QUEUE
data_directory = $PF_DIR/data
syslog_name = postfix-bench
maillog_file = $PF_DIR/maillog
maillog_file_prefixes = /var, /tmp, $PF_DIR
myhostname = postfix-bench.test
mydomain = bench.test
myorigin = \$myhostname
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
local_transport = error:5.1.1 local delivery is off in this benchmark
default_transport = error:5.1.2 no route in this benchmark
relayhost =
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_recipient_restrictions = permit_mynetworks, reject
smtpd_peername_lookup = no
transport_maps = texthash:$PF_CONF/transport
smtp_dns_support_level = disabled
smtp_host_lookup = native
smtp_tls_security_level = none
smtpd_tls_security_level = none
biff = no
EOF
	cat >"$PF_CONF/master.cf" <<EOF
# service type  private unpriv  chroot  wakeup  maxproc command + args
127.0.0.1:$port inet n  -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
EOF
}

pf_set() { postconf -c "$PF_CONF" -e "$@"; }

# pf_route DOMAIN HOST:PORT - HOST an IPv4 literal.
pf_route() {
	printf '%s smtp:[%s]:%s\n' "$1" "${2%:*}" "${2##*:}" >>"$PF_CONF/transport"
}

# Start the instance; fails (with the maillog's tail) if it does not come up.
pf_start() {
	local _
	postfix -c "$PF_CONF" start >"$PF_DIR/start.log" 2>&1 || {
		bench_log "postfix start failed: $(tail -3 "$PF_DIR/start.log")"
		return 1
	}
	for _ in $(seq 1 100); do
		PF_MASTER_PID=$(tr -dc 0-9 <"$PF_QUEUE/pid/master.pid" 2>/dev/null)
		[ -n "$PF_MASTER_PID" ] && kill -0 "$PF_MASTER_PID" 2>/dev/null && return 0
		sleep 0.1
	done
	bench_log "postfix master did not start: $(tail -3 "$PF_DIR/maillog" 2>/dev/null)"
	return 1
}

# Stop the instance (postfix stop, then the master's pid, bounded).
pf_stop() {
	local _
	[ -n "$PF_CONF" ] && [ -n "$PF_MASTER_PID" ] || return 0
	postfix -c "$PF_CONF" stop >/dev/null 2>&1
	for _ in $(seq 1 100); do
		kill -0 "$PF_MASTER_PID" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$PF_MASTER_PID" 2>/dev/null; then
		# master(8) takes its children down with it on SIGTERM.
		kill -TERM "$PF_MASTER_PID" 2>/dev/null
		sleep 1
		kill -KILL "$PF_MASTER_PID" 2>/dev/null
	fi
	PF_MASTER_PID=""
}

pf_queue_count() {
	find "$PF_QUEUE/maildrop" "$PF_QUEUE/incoming" "$PF_QUEUE/active" \
		"$PF_QUEUE/deferred" "$PF_QUEUE/hold" -type f 2>/dev/null | wc -l
}

# pf_wait_empty SECS: 0 when the queue emptied within SECS seconds.
pf_wait_empty() {
	local _
	for _ in $(seq 1 $(($1 * 10))); do
		[ "$(pf_queue_count)" = 0 ] && return 0
		sleep 0.1
	done
	return 1
}

# The master and its live children (the master's pid first).
pf_pids() {
	[ -n "$PF_MASTER_PID" ] || return 0
	echo "$PF_MASTER_PID"
	pgrep -P "$PF_MASTER_PID"
}

# CPU seconds the instance has used: the master's own time plus the time
# of its children that have exited (cutime + cstime: the master reaps
# them), plus the live children's own time. Monotonic while it runs.
pf_cpu_s() {
	local tck pids p
	tck=$(getconf CLK_TCK)
	pids=$(pf_pids)
	[ -n "$pids" ] || { echo 0; return; }
	for p in $pids; do
		# Fields after the ") " that ends comm: utime is $12, cutime $14.
		sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null |
			awk -v m="$([ "$p" = "$PF_MASTER_PID" ] && echo 1 || echo 0)" \
				'{ s = $12 + $13; if (m) s += $14 + $15; print s }'
	done | awk -v t="$tck" '{ s += $1 } END { printf "%.3f", s / t }'
}

# Resident memory (kB) of the master and its live children.
pf_rss_kb() {
	local p
	for p in $(pf_pids); do
		awk '/^VmRSS:/ { print $2 }' "/proc/$p/status" 2>/dev/null
	done | awk '{ s += $1 } END { print s + 0 }'
}

# Proportional set size (kB) of the master and its live children: shared
# library pages are counted once overall, not once per process.
pf_pss_kb() {
	local p
	for p in $(pf_pids); do
		awk '/^Pss:/ { print $2 }' "/proc/$p/smaps_rollup" 2>/dev/null
	done | awk '{ s += $1 } END { print s + 0 }'
}
