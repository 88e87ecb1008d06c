#!/usr/bin/env bash
# `make demo`: Apache httpd (prefork) with three IP-based virtual hosts on
# 127.0.0.2-4 runs under vhqos with demo/qos.toml. A little traffic goes to
# each; the table shows which processes served it, the cgroup they were in
# while serving and the DSCP mark their packets carried on the wire.
# Everything happens in a private network namespace and stops cleanly.
set -euo pipefail
src=$(cd "$(dirname "$0")" && pwd)
bin=${VHQOS_BIN:-$src/../build/vhqos}
requests=${DEMO_REQUESTS:-20}

if [ "$(id -u)" != 0 ]; then
	echo "make demo: run as root (vhqos creates cgroups and installs a seccomp filter)" >&2
	exit 1
fi
if [ -z "${VHQOS_DEMO_NS:-}" ]; then
	missing=()
	command -v apache2 >/dev/null || missing+=(apache2)
	command -v curl >/dev/null || missing+=(curl)
	command -v tcpdump >/dev/null || missing+=(tcpdump)
	command -v ip >/dev/null || missing+=(iproute2)
	if [ ${#missing[@]} -gt 0 ]; then
		echo "installing ${missing[*]} ..."
		# Keep the package scripts from starting a system-wide Apache.
		rcd=; [ -e /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; rcd=1; }
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
		[ -z "$rcd" ] || rm -f /usr/sbin/policy-rc.d
	fi
	exec env VHQOS_DEMO_NS=1 unshare --net --mount --propagation private "$0" "$@"
fi

ip link set lo up
dir=$(mktemp -d /tmp/vhqos-demo.XXXXXX)
chmod 755 "$dir"
sed "s|@DIR@|$dir|g; s|@SRC@|$src|g" "$src/apache.conf.in" >"$dir/apache.conf"

# Packets the server sends after accept: with data or FIN (the SYN-ACK and
# early ACKs go out before the server accepted, with the listener's mark).
tcpdump -i lo -nn -t -v -l 'tcp src port 8080 and (tcp[tcpflags] & (tcp-push|tcp-fin) != 0)' >"$dir/wire.txt" 2>/dev/null &
tcpdump_pid=$!
"$bin" run --config "$src/qos.toml" --status-socket "$dir/status.sock" -- apache2 -DFOREGROUND -f "$dir/apache.conf" 2>"$dir/vhqos.log" &
vhqos_pid=$!
trap 'kill -TERM $vhqos_pid $tcpdump_pid 2>/dev/null || true' EXIT

for _ in $(seq 100); do
	curl -s -o /dev/null http://127.0.0.2:8080/ && break
	kill -0 $vhqos_pid 2>/dev/null || { echo "vhqos did not start:"; cat "$dir/vhqos.log"; exit 1; }
	sleep 0.1
done
echo "Apache prefork is running under vhqos (pid $vhqos_pid); sending $requests requests to each vhost..."
for vh in shop:127.0.0.2 blog:127.0.0.3 static:127.0.0.4; do
	for _ in $(seq "$requests"); do
		curl -s "http://${vh#*:}:8080/cgi-bin/whoami" >>"$dir/${vh%%:*}.out"
	done
done
sleep 0.5
kill -TERM $tcpdump_pid; wait $tcpdump_pid 2>/dev/null || true

printf '\n%-7s %-9s %-8s %-30s %-34s %s\n' VHOST ADDRESS REQUESTS "SERVING PIDS" "CGROUP WHILE SERVING" "DSCP ON THE WIRE"
for vh in shop:127.0.0.2 blog:127.0.0.3 static:127.0.0.4; do
	name=${vh%%:*} addr=${vh#*:}
	count=$(awk -v v="$name" '$1 == v' "$dir/access.log" | wc -l)
	pids=$(awk '/^pid/ {print $2}' "$dir/$name.out" | sort -un | tr '\n' ' ')
	cgroups=$(awk '/^cgroup/ {sub(/^cgroup [0-9]+:[^:]*:/, ""); print}' "$dir/$name.out" | sort -u | tr '\n' ' ')
	# tcpdump -v prints "IP (tos 0xb8, ...)" and the addresses on the next line.
	dscp=$(awk -v a="$addr.8080 >" '/^IP \(tos/ {tos=$3; sub(/,/, "", tos)} index($0, a) {print tos}' "$dir/wire.txt" |
		sort -u | while read -r t; do [ -z "$t" ] || echo $((t >> 2)); done | sort -un | tr '\n' ' ')
	printf '%-7s %-9s %-8s %-30s %-34s %s\n' "$name" "$addr" "$count" "${pids:0:30}" "$cgroups" "${dscp:-none seen}"
done

echo
echo "What the operator sees (vhqos status --socket $dir/status.sock):"
"$bin" status --socket "$dir/status.sock" | sed 's/^/  /'

kill -TERM $vhqos_pid
status=0; wait $vhqos_pid || status=$?
trap - EXIT
echo
echo "vhqos stopped (exit status $status); its log:"
sed 's/^/  /' "$dir/vhqos.log"
left=$(find /sys/fs/cgroup -maxdepth 6 -type d -name "vhqos.$vhqos_pid*" 2>/dev/null | wc -l)
echo "cgroups left behind: $left; server processes left: $(pgrep -c -f "$dir/apache.conf" || true)"
[ -n "${DEMO_KEEP:-}" ] || rm -rf "$dir"
