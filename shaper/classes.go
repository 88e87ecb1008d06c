package shaper

import (
	"errors"
	"fmt"
	"slices"

	"github.com/vishvananda/netlink"
)

// Class is one HTB class under vhqos's root, by its minor in the map Sync
// takes. A class that another names as its parent is an inner class (a
// tenant's): packets are never classified to it, and it bounds what the
// classes inside it send together. A class nothing names is a leaf (a
// vhost's), and its class id is the socket mark of its connections.
type Class struct {
	// Parent is the minor of the class this one is inside, 0 for none
	// (right under the root qdisc).
	Parent uint16
	// Rate is what the class may always send, in bits per second: HTB's
	// rate. Among the classes inside one parent the rates should add up
	// to no more than the parent's rate, or the parent does not bound
	// them: HTB lets a class send up to its rate without asking its
	// parent.
	Rate uint64
	// Ceil is what the class may send at most, borrowing what its parent
	// has to spare beyond its own rate, in bits per second: HTB's ceil,
	// at least Rate. A class right under the root has nothing to borrow
	// from, and its Ceil is its Rate.
	Ceil uint64
}

// MaxDepth is how many classes HTB nests, from a class right under the
// root down to a leaf (TC_HTB_MAXDEPTH in the kernel's sch_htb.c): a leaf
// may be inside at most MaxDepth-1 classes.
const MaxDepth = 8

// Sync makes the HTB classes under vhqos's root on every device exactly
// classes, by minor. Classes are added, changed in place (the packets
// queued in them stay) and deleted. HTB cannot move a class to another
// parent, so a class whose parent changed is deleted, with the classes
// inside it, and made again under its new parent: the packets queued in
// it then are dropped (TCP sends them again). The root is claimed first
// (Claim), so a root qdisc that went missing is put back. The devices are
// done one after the other; a device that fails does not stop the others,
// and the errors are joined. A class naming a parent that is not in
// classes, classes inside each other in a loop, or nesting deeper than
// MaxDepth are an error before any device is touched.
func Sync(devices []string, classes map[uint16]Class) error {
	depth, err := depths(classes)
	if err != nil {
		return err
	}
	var errs []error
	for _, dev := range devices {
		if err := syncDevice(dev, classes, depth); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// depths returns how deep each class of tree is: 1 right under the root.
func depths(tree map[uint16]Class) (map[uint16]int, error) {
	depth := make(map[uint16]int, len(tree))
	for m := range tree {
		d, at := 0, m
		for at != 0 {
			c, ok := tree[at]
			if !ok {
				return nil, fmt.Errorf("shaper: class %s is inside %s, which is not among the classes", handleString(ClassID(m)), handleString(ClassID(at)))
			}
			d++
			if d > MaxDepth {
				return nil, fmt.Errorf("shaper: class %s is nested more than %d deep (or in a loop), more than HTB takes", handleString(ClassID(m)), MaxDepth)
			}
			at = c.Parent
		}
		depth[m] = d
	}
	return depth, nil
}

// parentMinor is the minor of the parent of a class of vhqos's as the
// kernel reports it: 0 for the root, ok false for a class that is not
// under vhqos's root.
func parentMinor(parent uint32) (uint16, bool) {
	if parent == netlink.HANDLE_ROOT {
		return 0, true
	}
	major, minor := netlink.MajorMinor(parent)
	return minor, major == Major && minor != 0
}

func syncDevice(dev string, want map[uint16]Class, depth map[uint16]int) error {
	link, err := claim(dev)
	if err != nil {
		return err
	}
	// The dump of the root's classes holds every class of vhqos's qdisc,
	// however deep; HTB reports those right under it with the parent
	// TC_H_ROOT.
	classes, err := netlink.ClassList(link, rootHandle)
	if err != nil {
		return fmt.Errorf("listing vhqos's classes on %s: %w", dev, err)
	}
	have := map[uint16]*netlink.HtbClass{}
	haveParent := map[uint16]uint16{}
	for _, c := range classes {
		htb, ok := c.(*netlink.HtbClass)
		if !ok {
			continue
		}
		major, minor := netlink.MajorMinor(htb.Handle)
		parent, ours := parentMinor(htb.Parent)
		if major != Major || !ours {
			continue
		}
		have[minor], haveParent[minor] = htb, parent
	}
	// What goes: classes not wanted, or wanted under another parent, and
	// every class inside one that goes (HTB deletes no class that has
	// classes inside it).
	gone := map[uint16]bool{}
	for m := range have {
		if w, ok := want[m]; !ok || w.Parent != haveParent[m] {
			gone[m] = true
		}
	}
	for changed := true; changed; {
		changed = false
		for m, p := range haveParent {
			if p != 0 && gone[p] && !gone[m] {
				gone[m], changed = true, true
			}
		}
	}
	haveDepth := func(m uint16) int {
		d := 0
		for at := m; at != 0 && d <= MaxDepth; at = haveParent[at] {
			d++
		}
		return d
	}
	var errs []error
	for _, m := range sortedBy(gone, func(m uint16) int { return -haveDepth(m) }) {
		if err := netlink.ClassDel(have[m]); err != nil {
			errs = append(errs, fmt.Errorf("deleting class %s on %s: %w", handleString(ClassID(m)), dev, err))
		}
	}
	// Parents before the classes inside them.
	for _, m := range sortedBy(want, func(m uint16) int { return depth[m] }) {
		w := want[m]
		c := newClass(link, m, w)
		old, kept := have[m]
		switch {
		case !kept || gone[m]:
			if err := netlink.ClassAdd(c); err != nil {
				errs = append(errs, fmt.Errorf("adding class %s (%s) on %s: %w", handleString(ClassID(m)), w, dev, err))
			}
		case old.Rate != c.Rate || old.Ceil != c.Ceil:
			if err := netlink.ClassChange(c); err != nil {
				errs = append(errs, fmt.Errorf("changing class %s to %s on %s: %w", handleString(ClassID(m)), w, dev, err))
			}
		}
	}
	return errors.Join(errs...)
}

// sortedBy returns the minors of m ordered by key, then by minor.
func sortedBy[V any](m map[uint16]V, key func(uint16) int) []uint16 {
	out := make([]uint16, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.SortFunc(out, func(a, b uint16) int {
		if ka, kb := key(a), key(b); ka != kb {
			return ka - kb
		}
		return int(a) - int(b)
	})
	return out
}

// String says where the class is and its rates: "in 7668:a, rate 20000000
// bit/s, ceil 40000000 bit/s".
func (c Class) String() string {
	where := "under the root"
	if c.Parent != 0 {
		where = "in " + handleString(ClassID(c.Parent))
	}
	if c.Ceil == c.Rate {
		return fmt.Sprintf("%s, %d bit/s", where, c.Rate)
	}
	return fmt.Sprintf("%s, rate %d bit/s, ceil %d bit/s", where, c.Rate, c.Ceil)
}

// newClass is the HTB class of minor on link.
//
// Its bursts (the bytes it may send at once after a pause, at its rate
// and at its ceil) are 10 ms of the rate and of the ceil, each at least
// 64 KiB. tc's default, rate/HZ plus one MTU, is 1600 bytes with
// high-resolution timers: then every microsecond the qdisc's timer fires
// late is lost for good, and one TSO/GSO packet of up to 64 KiB already
// overdraws it. Measured on a veth pair in the VM (Linux 6.1 under
// software emulation): 4 downloads under 40 Mbit/s got 30.4 Mbit/s
// together with tc's burst (the host's load average near 20), 37.5 with
// this one (load 6); 38.3 on the host with either. Over a transfer the
// rate is the same; only its first 64 KiB may go faster.
//
// The quantum (bytes a class sends per round when classes inside one
// parent borrow its spare bandwidth) follows the class's rate, as HTB's
// own default does (rate/10 within the bounds the kernel does not warn
// about), so that classes with equal rates share equally.
func newClass(link netlink.Link, minor uint16, c Class) *netlink.HtbClass {
	burst := func(bits uint64) uint32 { return uint32(min(max(bits/8/100, 64<<10), 1<<30)) }
	quantum := min(max(c.Rate/8/10, 1514), 200000)
	parent := rootHandle
	if c.Parent != 0 {
		parent = ClassID(c.Parent)
	}
	ceil := max(c.Ceil, c.Rate)
	return netlink.NewHtbClass(
		netlink.ClassAttrs{LinkIndex: link.Attrs().Index, Parent: parent, Handle: ClassID(minor)},
		netlink.HtbClassAttrs{Rate: c.Rate, Ceil: ceil, Buffer: burst(c.Rate), Cbuffer: burst(ceil), Quantum: uint32(quantum)},
	)
}
