package shaper

import (
	"errors"
	"fmt"
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
	// A neighbour that never answers, made permanent so that packets to
	// it leave through vq0 at once (and its qdisc), without ARP.
	if err := netlink.AddrAdd(link, &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(169, 254, 77, 1), Mask: net.CIDRMask(24, 32)}}); err != nil {
		t.Fatal(err)
	}
	peer := net.IPv4(169, 254, 77, 9)
	mac, _ := net.ParseMAC("02:00:00:00:00:09")
	if err := netlink.NeighAdd(&netlink.Neigh{LinkIndex: link.Attrs().Index, Family: unix.AF_INET, State: netlink.NUD_PERMANENT, IP: peer, HardwareAddr: mac}); err != nil {
		t.Fatal(err)
	}
	if err := Sync([]string{"vq0"}, map[uint16]uint64{2: 40_000_000, 5: 8_000_000}); err != nil {
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

	send := func(mark uint32, n int) {
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

	if err := Sync([]string{"vq0"}, map[uint16]uint64{2: 20_000_000}); err != nil {
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
	if err := Sync([]string{"vq0"}, map[uint16]uint64{2: 20_000_000}); err != nil {
		t.Fatalf("sync after the root went: %v", err)
	}
	if got := rates(); len(got) != 1 || rootOf(t, "vq0") != "htb 7668:" {
		t.Errorf("after the root went, sync left %s with %v", rootOf(t, "vq0"), got)
	}
}
