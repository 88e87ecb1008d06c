package shaper

import (
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"
)

// ForeignError says that a device's egress qdiscs are not the kernel's
// defaults: someone set up traffic control there, and vhqos leaves it
// alone rather than replace it (or stack under it) unasked.
type ForeignError struct {
	Device string
	// Kind and Handle are the qdisc found: "tbf", 0x10000 for tc's "1:".
	Kind   string
	Handle uint32
	// Root says it is the device's root qdisc; otherwise it sits under
	// the root (a child of mq that the operator replaced).
	Root bool
}

func (e *ForeignError) Error() string {
	where := "root qdisc"
	if !e.Root {
		where = "qdisc"
	}
	return fmt.Sprintf("shape_devices: %s has a %s %s that vhqos did not make; vhqos shapes only devices whose egress qdiscs are still the kernel's default (handle 0:) and leaves this one alone: remove it (tc qdisc del dev %s root) or take %s out of shape_devices",
		e.Device, where, e.Qdisc(), e.Device, e.Device)
}

// Qdisc names the qdisc found as tc shows it, its kind and handle: "tbf
// 1:".
func (e *ForeignError) Qdisc() string { return e.Kind + " " + handleString(e.Handle) }

// handleString writes a handle as tc does: "1:", "7668:2".
func handleString(h uint32) string {
	major, minor := netlink.MajorMinor(h)
	if minor == 0 {
		return fmt.Sprintf("%x:", major)
	}
	return fmt.Sprintf("%x:%x", major, minor)
}

// rootHandle is the handle of vhqos's root qdisc.
var rootHandle = netlink.MakeHandle(Major, 0)

// egressState is what is at the root of a device.
type egressState int

const (
	stateDefault egressState = iota // the kernel's own qdiscs only
	stateOurs                       // vhqos's HTB
	stateForeign                    // anything else
)

// inspect says whose the egress qdiscs of link are. The kernel makes its
// default qdiscs (at the root, and under mq) with handle 0; any qdisc
// that tc or another program added has a handle of its own (tc's "1:",
// the kernel's 8001: and up when none was given). Ingress and clsact
// qdiscs are not on the egress path and are ignored.
func inspect(link netlink.Link) (egressState, *ForeignError, error) {
	qdiscs, err := netlink.QdiscList(link)
	if err != nil {
		return 0, nil, fmt.Errorf("listing the qdiscs of %s: %w", link.Attrs().Name, err)
	}
	for _, q := range qdiscs {
		a := q.Attrs()
		if a.Parent == netlink.HANDLE_ROOT && a.Handle == rootHandle && q.Type() == "htb" {
			return stateOurs, nil, nil
		}
	}
	for _, q := range qdiscs {
		a := q.Attrs()
		if a.Parent == netlink.HANDLE_INGRESS || a.Handle == 0 {
			continue
		}
		return stateForeign, &ForeignError{Device: link.Attrs().Name, Kind: q.Type(), Handle: a.Handle, Root: a.Parent == netlink.HANDLE_ROOT}, nil
	}
	return stateDefault, nil, nil
}

// Claim makes vhqos's root qdisc and filter ready on every device:
// installed where the device has the kernel's default qdiscs, adopted
// where they are vhqos's already (a filter missing there is added). A
// device that does not exist, or whose qdiscs are someone else's
// (*ForeignError), is an error naming it; the other devices are claimed
// all the same, and the errors are joined.
func Claim(devices []string) error {
	var errs []error
	for _, dev := range devices {
		if _, err := claim(dev); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Claimable says whether Claim would take dev now, changing nothing: nil
// when dev is there with the kernel's default egress qdiscs or vhqos's
// own, a *ForeignError when someone else's qdisc is on it, an error
// wrapping netlink.LinkNotFoundError when there is no such device, else
// an error saying what could not be read. vhqos check asks it, in its
// own network namespace, so that a table vhqos run would refuse there is
// not called OK.
func Claimable(dev string) error {
	link, err := netlink.LinkByName(dev)
	if err != nil {
		return fmt.Errorf("finding the network device %q: %w", dev, err)
	}
	if _, foreign, err := inspect(link); err != nil {
		return err
	} else if foreign != nil {
		return foreign
	}
	return nil
}

// claim claims one device and returns its link.
func claim(dev string) (netlink.Link, error) {
	link, err := netlink.LinkByName(dev)
	if err != nil {
		return nil, fmt.Errorf("shape_devices: no network device %q in vhqos's network namespace (ip link lists them): %w", dev, err)
	}
	state, foreign, err := inspect(link)
	switch {
	case err != nil:
		return nil, err
	case state == stateForeign:
		return nil, foreign
	case state == stateOurs:
		ok, err := hasFilter(link)
		if err == nil && !ok {
			err = addFilter(link)
		}
		return link, err
	}
	htb := netlink.NewHtb(netlink.QdiscAttrs{LinkIndex: link.Attrs().Index, Handle: rootHandle, Parent: netlink.HANDLE_ROOT})
	// Exclusive: if another program put a qdisc there since inspect
	// looked, this fails instead of replacing it.
	if err := netlink.QdiscAdd(htb); err != nil {
		return nil, fmt.Errorf("installing vhqos's HTB qdisc (%s) on %s: %w", handleString(rootHandle), dev, err)
	}
	if err := addFilter(link); err != nil {
		netlink.QdiscDel(htb)
		return nil, err
	}
	return link, nil
}

// Release removes vhqos's root qdisc, with its classes and filter, from
// every device that has it; the kernel then attaches its default qdisc
// again, as it was before Claim. A device that is gone, or whose root is
// not vhqos's (someone replaced it), is left as it is. It returns the
// devices it restored; errors are joined.
func Release(devices []string) ([]string, error) {
	var restored []string
	var errs []error
	for _, dev := range devices {
		link, err := netlink.LinkByName(dev)
		if err != nil {
			continue // gone with its qdiscs
		}
		state, _, err := inspect(link)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if state != stateOurs {
			continue
		}
		// The kernel deletes the root only if its handle is this one.
		htb := netlink.NewHtb(netlink.QdiscAttrs{LinkIndex: link.Attrs().Index, Handle: rootHandle, Parent: netlink.HANDLE_ROOT})
		if err := netlink.QdiscDel(htb); err != nil {
			errs = append(errs, fmt.Errorf("removing vhqos's qdisc from %s: %w", dev, err))
			continue
		}
		restored = append(restored, dev)
	}
	return restored, errors.Join(errs...)
}

// RootQdisc describes the root qdisc of dev as tc shows it ("noqueue 0:",
// "htb 7668:"), for logs and tests.
func RootQdisc(dev string) (string, error) {
	link, err := netlink.LinkByName(dev)
	if err != nil {
		return "", fmt.Errorf("finding %s: %w", dev, err)
	}
	qdiscs, err := netlink.QdiscList(link)
	if err != nil {
		return "", fmt.Errorf("listing the qdiscs of %s: %w", dev, err)
	}
	for _, q := range qdiscs {
		if q.Attrs().Parent == netlink.HANDLE_ROOT {
			return q.Type() + " " + handleString(q.Attrs().Handle), nil
		}
	}
	return "", fmt.Errorf("%s has no root qdisc", dev)
}
