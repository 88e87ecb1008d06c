package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/vhqos/vhqos/policy"
	"github.com/vhqos/vhqos/shaper"
	"github.com/vishvananda/netlink"
)

func checkCommand(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("check")
	files, code, ok := parseArgs(fs, args, 1, stdout, stderr)
	if !ok {
		return code
	}
	if len(files) != 1 {
		fmt.Fprintln(stderr, "vhqos check: name one QoS table, e.g. vhqos check /etc/vhqos/qos.toml")
		return exitUsage
	}
	table, err := policy.Load(files[0], policy.WithNetDeviceCheck(netDeviceHere))
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	// Warnings go where errors go, each on its line like them; the
	// verdict stays on stdout.
	for _, w := range table.Warnings {
		fmt.Fprintln(stderr, w)
	}
	verdict := fmt.Sprintf("%s: OK, %d vhost(s)", files[0], len(table.VHosts))
	if n := len(table.Tenants); n > 0 {
		verdict += fmt.Sprintf(", %d tenant(s)", n)
	}
	if n := len(table.Warnings); n > 0 {
		verdict += fmt.Sprintf(", %d warning(s)", n)
	}
	fmt.Fprintln(stdout, verdict)
	return 0
}

// netDeviceHere checks a device of shape_devices in the network namespace
// vhqos check runs in, as vhqos run will (shaper.Claim): a device missing
// here, or one with a qdisc the operator put at its root, stops vhqos run
// from starting, so check says so first; a device vhqos shapes already
// (a vhqos running, or killed with its qdisc left) is fine. Run check
// where vhqos runs: in a container's or a netns's namespace, with
// nsenter --net=. The device's qdiscs may change between check and run:
// check tells what run would find now, as it does for the device itself.
func netDeviceHere(name string) error {
	err := shaper.Claimable(name)
	var missing netlink.LinkNotFoundError
	var foreign *shaper.ForeignError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &missing):
		return fmt.Errorf("no network device %q in this network namespace (ip link lists them); vhqos run does not start without it", name)
	case errors.As(err, &foreign):
		where := "at its root"
		if !foreign.Root {
			where = "under its root"
		}
		return fmt.Errorf("%s has a qdisc %s %s that vhqos did not make (tc qdisc show dev %s); vhqos run does not start while it is there: remove it (tc qdisc del dev %s root) or take %s out of shape_devices",
			name, foreign.Qdisc(), where, name, name, name)
	}
	// Already says what was being done: finding the device, listing its
	// qdiscs.
	return err
}
