package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/vhqos/vhqos/policy"
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
// here stops vhqos run from starting, so check says so first. Run check
// where vhqos runs: in a container's or a netns's namespace, with
// nsenter --net=.
func netDeviceHere(name string) error {
	_, err := netlink.LinkByName(name)
	var missing netlink.LinkNotFoundError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &missing):
		return fmt.Errorf("no network device %q in this network namespace (ip link lists them); vhqos run does not start without it", name)
	}
	return fmt.Errorf("looking for the network device %q: %w", name, err)
}
