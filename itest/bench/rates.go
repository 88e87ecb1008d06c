package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/vhqos/vhqos/cgroup"
)

// benchDevice is the server's end of the veth pair -rates measures over.
const benchDevice = "vqbench0"

// ratesBench measures what bandwidth limits that are never reached cost:
// the same server under vhqos with the table as it is and with
// egress_rate and connection_rate ("" leaves one out) on every vhost,
// alternating, on each path. wrk runs behind a veth pair (main), as
// clients are on another machine: with an egress_rate the table shapes
// the server's end, so that the HTB qdisc and its filter are in the way
// of every packet the server sends, as on a real NIC; with a
// connection_rate every connection is paced. Shaping lo instead would
// put wrk's own packets through the same qdisc. The rates must be above
// what the vhost and each connection send, bursts included, to be "not
// reached".
func ratesBench(cg *cgroup.Manager, bin, table, egress, connection string, setups []setup, pairs, conns int, opts measureOptions) error {
	var settings, keys string
	if egress != "" {
		settings = fmt.Sprintf("[settings]\nshape_devices = [%q]\n", benchDevice)
		keys += fmt.Sprintf("egress_rate = %q\n", egress)
	}
	if connection != "" {
		keys += fmt.Sprintf("connection_rate = %q\n", connection)
	}
	return tablesBench(cg, bin, tablePair{
		base: table, other: settings + strings.ReplaceAll(table, "dscp = ", keys+"dscp = "),
		what:      fmt.Sprintf("egress_rate = %q (shape_devices = [%q], wrk behind it) and connection_rate = %q on every vhost", egress, benchDevice, connection),
		baseLabel: "no rates", otherLabel: "rates never reached", ratio: "rated/unrated",
		baseCPU: "no rates", otherCPU: "rates",
	}, setups, pairs, conns, opts)
}

// clientSysctls lets wrk's Connection: close runs go on across the veth
// pair as they do over loopback. wrk closes its side first, so its
// sockets wait in TIME_WAIT; over loopback the kernel reuses such a port
// for the next connection (tcp_tw_reuse = 2, its default, is "loopback
// only"), across the veth it would not, and after a round the ports run
// out (measured: 13,500 requests/s fell to 470 within five 3 s runs).
// Reuse everywhere, as a load generator is set up, and every port in the
// range; both sysctls are the clients' namespace's own.
func clientSysctls() error {
	for file, value := range map[string]string{
		"/proc/sys/net/ipv4/tcp_tw_reuse":        "1",
		"/proc/sys/net/ipv4/ip_local_port_range": "1024 65535",
	} {
		if err := os.WriteFile(file, []byte(value), 0o644); err != nil {
			return fmt.Errorf("setting %s in the clients' namespace: %w", file, err)
		}
	}
	return nil
}
