package shaper

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// inNetns moves the test's goroutine, locked to its thread, into a network
// namespace of its own with a veth pair vq0/vq1, both up: nothing of the
// host's is touched. The thread is never unlocked, so it ends with the
// test instead of going back to the pool in the wrong namespace; subtests
// (other goroutines) would not be in it, so these tests have none.
func inNetns(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: makes a network namespace")
	}
	runtime.LockOSThread()
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		t.Fatalf("entering a network namespace of its own: %v", err)
	}
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "vq0"}, PeerName: "vq1"}
	if err := netlink.LinkAdd(veth); err != nil {
		t.Fatalf("making a veth pair: %v", err)
	}
	for _, dev := range []string{"vq0", "vq1"} {
		link, err := netlink.LinkByName(dev)
		if err == nil {
			err = netlink.LinkSetUp(link)
		}
		if err != nil {
			t.Fatalf("bringing %s up: %v", dev, err)
		}
	}
}

// flat is a tree of classes right under the root, each at its rate.
func flat(rates map[uint16]uint64) map[uint16]Class {
	out := make(map[uint16]Class, len(rates))
	for m, r := range rates {
		out[m] = Class{Rate: r, Ceil: r}
	}
	return out
}

// sender gives link a neighbour that never answers, made permanent so
// that packets to it leave through link at once (and its qdisc), without
// ARP, and returns a function that sends n datagrams to it from a socket
// with the mark (0: none).
func sender(t *testing.T, link netlink.Link) func(mark uint32, n int) {
	t.Helper()
	if err := netlink.AddrAdd(link, &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(169, 254, 77, 1), Mask: net.CIDRMask(24, 32)}}); err != nil {
		t.Fatal(err)
	}
	peer := net.IPv4(169, 254, 77, 9)
	mac, _ := net.ParseMAC("02:00:00:00:00:09")
	if err := netlink.NeighAdd(&netlink.Neigh{LinkIndex: link.Attrs().Index, Family: unix.AF_INET, State: netlink.NUD_PERMANENT, IP: peer, HardwareAddr: mac}); err != nil {
		t.Fatal(err)
	}
	return func(mark uint32, n int) {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		if mark != 0 {
			if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, int(mark)); err != nil {
				t.Fatal(err)
			}
		}
		to := &unix.SockaddrInet4{Port: 9, Addr: [4]byte{169, 254, 77, 9}}
		for range n {
			if err := unix.Sendto(fd, make([]byte, 100), 0, to); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func rootOf(t *testing.T, dev string) string {
	t.Helper()
	q, err := RootQdisc(dev)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// Claim puts vhqos's HTB and filter where the kernel's default was, is
// idempotent (a new supervisor adopts what the last one made), and
// Release gives the device its default back.
func TestClaimAndRelease(t *testing.T) {
	inNetns(t)
	before := rootOf(t, "vq0")
	if !strings.HasSuffix(before, " 0:") {
		t.Fatalf("veth starts with %q, want a default qdisc (handle 0:)", before)
	}
	for i := range 2 {
		if err := Claim([]string{"vq0"}); err != nil {
			t.Fatalf("claim %d: %v", i+1, err)
		}
		if got := rootOf(t, "vq0"); got != "htb 7668:" {
			t.Fatalf("after claim %d the root is %q, want htb 7668:", i+1, got)
		}
		link, _ := netlink.LinkByName("vq0")
		filters, err := netlink.FilterList(link, rootHandle)
		if err != nil || len(filters) != 1 || filters[0].Type() != "bpf" {
			t.Fatalf("after claim %d the filters are %v (%v), want the one bpf filter", i+1, filters, err)
		}
	}
	if got := rootOf(t, "vq1"); got != before {
		t.Errorf("the peer's root changed to %q", got)
	}
	for i := range 2 {
		restored, err := Release([]string{"vq0", "gone0"})
		if err != nil {
			t.Fatalf("release %d: %v", i+1, err)
		}
		if want := []string{"vq0"}[:1-i]; fmt.Sprint(restored) != fmt.Sprint(want) {
			t.Errorf("release %d restored %v, want %v", i+1, restored, want)
		}
		if got := rootOf(t, "vq0"); got != before {
			t.Errorf("after release %d the root is %q, want %q again", i+1, got, before)
		}
	}
}

// A qdisc that someone else set up, at the root or under it, keeps the
// device from vhqos, and stays as it was; so does a missing device.
func TestClaimRefusesOthersQdiscs(t *testing.T) {
	inNetns(t)
	link, _ := netlink.LinkByName("vq0")
	for _, tc := range []struct {
		q    netlink.Qdisc
		want string
	}{
		{&netlink.Tbf{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: link.Attrs().Index, Handle: netlink.MakeHandle(1, 0), Parent: netlink.HANDLE_ROOT}, Rate: 125000, Limit: 10000, Buffer: 5000},
			"vq0 has a root qdisc tbf 1: that vhqos did not make"},
		{netlink.NewHtb(netlink.QdiscAttrs{LinkIndex: link.Attrs().Index, Handle: netlink.MakeHandle(0x10, 0), Parent: netlink.HANDLE_ROOT}),
			"vq0 has a root qdisc htb 10: that vhqos did not make"},
	} {
		if err := netlink.QdiscAdd(tc.q); err != nil {
			t.Fatalf("setting up %v: %v", tc.q, err)
		}
		before := rootOf(t, "vq0")
		err := Claim([]string{"vq0"})
		var foreign *ForeignError
		if !errors.As(err, &foreign) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "tc qdisc del dev vq0 root") {
			t.Errorf("claim over %s: %v; want a ForeignError saying %q", before, err, tc.want)
		}
		if after := rootOf(t, "vq0"); after != before {
			t.Errorf("claim changed the operator's %s to %s", before, after)
		}
		if restored, err := Release([]string{"vq0"}); err != nil || len(restored) != 0 {
			t.Errorf("release removed %v (%v) from a device vhqos does not own", restored, err)
		}
		if err := netlink.QdiscDel(tc.q); err != nil {
			t.Fatal(err)
		}
	}
	err := Claim([]string{"nosuch0"})
	if err == nil || !strings.Contains(err.Error(), `no network device "nosuch0"`) {
		t.Errorf("claiming a missing device: %v", err)
	}
}

// Sync adds, changes and deletes the classes; Stats counts what each
// class sent, and only packets whose socket carries the class's mark go
// through it: the filter classifies by mark.
func TestSyncAndStats(t *testing.T) {
	inNetns(t)
	link, _ := netlink.LinkByName("vq0")
	send := sender(t, link)
	if err := Sync([]string{"vq0"}, flat(map[uint16]uint64{2: 40_000_000, 5: 8_000_000})); err != nil {
		t.Fatalf("sync: %v", err)
	}
	rates := func() map[uint16]uint64 {
		classes, err := netlink.ClassList(link, rootHandle)
		if err != nil {
			t.Fatal(err)
		}
		out := map[uint16]uint64{}
		for _, c := range classes {
			if htb, ok := c.(*netlink.HtbClass); ok {
				_, minor := netlink.MajorMinor(htb.Handle)
				out[minor] = htb.Rate * 8
				if htb.Ceil != htb.Rate {
					t.Errorf("class %x: ceil %d, rate %d bytes/s; want them equal", minor, htb.Ceil, htb.Rate)
				}
			}
		}
		return out
	}
	if got := rates(); fmt.Sprint(got) != fmt.Sprint(map[uint16]uint64{2: 40_000_000, 5: 8_000_000}) {
		t.Errorf("classes %v after the first sync", got)
	}

	send(ClassID(2), 3)
	send(ClassID(5), 1)
	send(0, 4)          // unmarked: HTB's direct queue
	send(0x12340002, 2) // someone else's mark: unshaped too
	stats, err := Stats([]string{"vq0", "gone0"})
	if err != nil {
		t.Fatal(err)
	}
	if stats[2].Packets != 3 || stats[5].Packets != 1 || stats[2].Bytes < 3*128 {
		t.Errorf("class counters %+v; want 3 packets in 7668:2 and 1 in 7668:5", stats)
	}

	if err := Sync([]string{"vq0"}, flat(map[uint16]uint64{2: 20_000_000})); err != nil {
		t.Fatalf("second sync: %v", err)
	}
	if got := rates(); fmt.Sprint(got) != fmt.Sprint(map[uint16]uint64{2: 20_000_000}) {
		t.Errorf("classes %v after the second sync, want 7668:2 at 20 Mbit/s alone", got)
	}
	if stats, _ := Stats([]string{"vq0"}); stats[2].Packets != 3 {
		t.Errorf("changing the rate reset the counters: %+v", stats[2])
	}
	// A root removed behind vhqos's back is put back by the next sync.
	netlink.QdiscDel(netlink.NewHtb(netlink.QdiscAttrs{LinkIndex: link.Attrs().Index, Handle: rootHandle, Parent: netlink.HANDLE_ROOT}))
	if err := Sync([]string{"vq0"}, flat(map[uint16]uint64{2: 20_000_000})); err != nil {
		t.Fatalf("sync after the root went: %v", err)
	}
	if got := rates(); len(got) != 1 || rootOf(t, "vq0") != "htb 7668:" {
		t.Errorf("after the root went, sync left %s with %v", rootOf(t, "vq0"), got)
	}
}

// kernelClasses reads vhqos's classes on link back from the kernel: minor
// -> parent minor, rate and ceil in bits per second.
func kernelClasses(t *testing.T, link netlink.Link) map[uint16]Class {
	t.Helper()
	classes, err := netlink.ClassList(link, rootHandle)
	if err != nil {
		t.Fatal(err)
	}
	out := map[uint16]Class{}
	for _, c := range classes {
		htb, ok := c.(*netlink.HtbClass)
		if !ok {
			continue
		}
		_, minor := netlink.MajorMinor(htb.Handle)
		parent, ours := parentMinor(htb.Parent)
		if !ours {
			t.Errorf("class %s has the parent %s, not under vhqos's root", handleString(htb.Handle), handleString(htb.Parent))
		}
		out[minor] = Class{Parent: parent, Rate: htb.Rate * 8, Ceil: htb.Ceil * 8}
	}
	return out
}

// A tenant's class holds its vhosts' classes: they borrow from it up to
// their ceil, its counters add up theirs, and Sync moves a class between
// parents (made again there), deletes a parent with what is inside it,
// and refuses trees HTB cannot hold before touching the device.
func TestSyncTree(t *testing.T) {
	inNetns(t)
	link, _ := netlink.LinkByName("vq0")
	send := sender(t, link)
	step := func(what string, tree map[uint16]Class) {
		t.Helper()
		if err := Sync([]string{"vq0"}, tree); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if got := kernelClasses(t, link); fmt.Sprint(got) != fmt.Sprint(tree) {
			t.Errorf("%s: the kernel has\n%v\nwant\n%v", what, got, tree)
		}
	}
	step("a tenant with two sites, and a site of no tenant", map[uint16]Class{
		10: {Rate: 40_000_000, Ceil: 40_000_000},
		11: {Parent: 10, Rate: 20_000_000, Ceil: 40_000_000},
		12: {Parent: 10, Rate: 20_000_000, Ceil: 30_000_000},
		2:  {Rate: 8_000_000, Ceil: 8_000_000},
	})
	send(ClassID(11), 3)
	send(ClassID(12), 2)
	send(ClassID(2), 1)
	stats, err := Stats([]string{"vq0"})
	if err != nil {
		t.Fatal(err)
	}
	if stats[11].Packets != 3 || stats[12].Packets != 2 || stats[10].Packets != 5 || stats[2].Packets != 1 {
		t.Errorf("counters %+v; want 3 in 7668:11 and 2 in 7668:12, 5 in their tenant 7668:10, 1 in 7668:2", stats)
	}
	step("12 leaves the tenant, 2 joins it, 11 changes its ceil", map[uint16]Class{
		10: {Rate: 40_000_000, Ceil: 40_000_000},
		11: {Parent: 10, Rate: 20_000_000, Ceil: 25_000_000},
		2:  {Parent: 10, Rate: 20_000_000, Ceil: 40_000_000},
		12: {Rate: 30_000_000, Ceil: 30_000_000},
	})
	if stats, _ := Stats([]string{"vq0"}); stats[11].Packets != 3 {
		t.Errorf("changing 7668:11 in place reset its counters: %+v", stats[11])
	}
	step("a reseller around the tenant", map[uint16]Class{
		20: {Rate: 100_000_000, Ceil: 100_000_000},
		10: {Parent: 20, Rate: 50_000_000, Ceil: 60_000_000},
		11: {Parent: 10, Rate: 20_000_000, Ceil: 25_000_000},
		2:  {Parent: 10, Rate: 20_000_000, Ceil: 40_000_000},
		12: {Parent: 20, Rate: 30_000_000, Ceil: 30_000_000},
	})
	step("the reseller goes, its tenant with it", map[uint16]Class{
		12: {Rate: 30_000_000, Ceil: 30_000_000},
	})

	// HTB nests MaxDepth classes, and the kernel refuses one more.
	chain := map[uint16]Class{}
	for m := uint16(1); m <= MaxDepth; m++ {
		chain[m] = Class{Parent: m - 1, Rate: 1_000_000, Ceil: 1_000_000}
	}
	step("classes nested MaxDepth deep", chain)
	deeper := newClass(link, MaxDepth+1, Class{Parent: MaxDepth, Rate: 1_000_000, Ceil: 1_000_000})
	if err := netlink.ClassAdd(deeper); err == nil {
		t.Errorf("the kernel took a class nested %d deep; MaxDepth is wrong", MaxDepth+1)
	}
	before := kernelClasses(t, link)
	for _, bad := range []struct {
		tree map[uint16]Class
		want string
	}{
		{map[uint16]Class{1: {Parent: 7, Rate: 1e6, Ceil: 1e6}}, "class 7668:1 is inside 7668:7, which is not among the classes"},
		{map[uint16]Class{1: {Parent: 2, Rate: 1e6, Ceil: 1e6}, 2: {Parent: 1, Rate: 1e6, Ceil: 1e6}}, "in a loop"},
		{func() map[uint16]Class {
			c := maps.Clone(chain)
			c[MaxDepth+1] = Class{Parent: MaxDepth, Rate: 1e6, Ceil: 1e6}
			return c
		}(), "nested more than 8 deep"},
	} {
		err := Sync([]string{"vq0"}, bad.tree)
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("sync of %v: %v; want an error saying %q", bad.tree, err, bad.want)
		}
	}
	if after := kernelClasses(t, link); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("a refused tree changed the classes from %v to %v", before, after)
	}
}
