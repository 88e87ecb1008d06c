package supervisor

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestClientKey(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"192.0.2.7", "192.0.2.7"},
		{"::ffff:192.0.2.7", "192.0.2.7"}, // an IPv6 socket saw an IPv4 client
		{"2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::"},
		{"2001:db8:1:2::1", "2001:db8:1:2::"},
		{"2001:db8:1:3::1", "2001:db8:1:3::"},
		{"::1", "::"},
	} {
		if got := clientKey(netip.MustParseAddr(tc.in)); got != netip.MustParseAddr(tc.want) {
			t.Errorf("clientKey(%s) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

// fakeKernel stands for sock_diag and /proc in the admission record's
// tests: it holds the cookies of the connections "still open", the local
// addresses of the ones the kernel accepted itself, the threads still
// waiting in an accept, the sockets each process holds, and counts how
// often it was asked. A connection's inode is its cookie plus inodeBase.
type fakeKernel struct {
	open     map[uint64]bool
	accepted map[uint64]netip.AddrPort // by cookie: accepted by the kernel, never recorded
	waiting  map[int]bool              // by tid
	running  map[int]bool              // by tid: on a CPU or runnable
	holds    map[int][]uint64          // by tgid: cookies of the connections it has a file of
	asked    int
	fail     error
}

const inodeBase = 1 << 20

func (k *fakeKernel) count(held func(cookie, inode uint64, local netip.AddrPort)) error {
	k.asked++
	if k.fail != nil {
		return k.fail
	}
	for c := range k.open {
		held(c, c+inodeBase, netip.MustParseAddrPort("192.0.2.99:80"))
	}
	for c, local := range k.accepted {
		held(c, c+inodeBase, local)
	}
	return nil
}

func (k *fakeKernel) heldSockets(tgid int) map[int]uint64 {
	out := map[int]uint64{}
	for i, c := range k.holds[tgid] {
		out[3+i] = c + inodeBase
	}
	return out
}

// fastShop is the address of a listener whose address decides its class,
// shop, in these tests.
var fastShop = netip.MustParseAddrPort("192.0.2.10:80")

func newTestAdmissions(k *fakeKernel, shop Decision) *admissions {
	a := newAdmissions(slog.New(slog.DiscardHandler), func(bound netip.AddrPort) (Decision, bool) {
		return shop, bound == fastShop
	})
	a.count = k.count
	a.waiting = func(_, tid, _ int) (bool, bool) { return k.waiting[tid], k.running[tid] }
	a.heldSockets = k.heldSockets
	return a
}

// The kernel is asked only when a figure reaches a cap, and then its
// answer decides: closed connections make room, open ones do not.
func TestAdmissionAsksTheKernelOnlyAtTheCap(t *testing.T) {
	k := &fakeKernel{open: map[uint64]bool{}}
	adm := &Admission{MaxConnections: 3}
	a := newTestAdmissions(k, Decision{Group: "shop", Admission: adm})
	client := netip.MustParseAddr("192.0.2.1")
	for cookie := uint64(1); cookie <= 3; cookie++ {
		if !a.tryAdmit("shop", adm, cookie, client) {
			t.Fatalf("connection %d refused under a cap of 3", cookie)
		}
		k.open[cookie] = true
	}
	if k.asked != 0 {
		t.Errorf("below the cap the kernel was asked %d times; want 0", k.asked)
	}
	if a.tryAdmit("shop", adm, 4, client) {
		t.Fatal("a 4th connection was admitted while 3 are open under a cap of 3")
	}
	if k.asked != 1 {
		t.Errorf("at the cap the kernel was asked %d times; want 1", k.asked)
	}
	delete(k.open, 2) // the server closed connection 2
	if !a.tryAdmit("shop", adm, 5, client) {
		t.Fatal("a connection was refused after one of 3 closed under a cap of 3")
	}
	k.open[5] = true
	if got := a.stats()["shop"]; got.Open != 3 || got.Admitted != 4 {
		t.Errorf("stats %+v; want 3 open, 4 admitted", got)
	}
}

func TestAdmissionPerClient(t *testing.T) {
	k := &fakeKernel{open: map[uint64]bool{}}
	adm := &Admission{MaxConnectionsPerIP: 1}
	a := newTestAdmissions(k, Decision{Group: "shop", Admission: adm})
	for i, tc := range []struct {
		client string
		want   bool
	}{
		{"192.0.2.1", true},
		{"192.0.2.2", true},
		{"192.0.2.1", false},
		{"::ffff:192.0.2.2", false},
		{"2001:db8:0:1::1", true},
		{"2001:db8:0:1::2", false}, // same /64
		{"2001:db8:0:2::1", true},
	} {
		cookie := uint64(i + 1)
		got := a.tryAdmit("shop", adm, cookie, netip.MustParseAddr(tc.client))
		if got != tc.want {
			t.Errorf("connection %d from %s: admitted %v, want %v", cookie, tc.client, got, tc.want)
		}
		if got {
			k.open[cookie] = true
		}
	}
}

// When the kernel cannot be asked, the cap is not a reason to refuse.
func TestAdmissionFailsOpen(t *testing.T) {
	k := &fakeKernel{open: map[uint64]bool{1: true}, fail: errors.New("sock_diag unavailable")}
	adm := &Admission{MaxConnections: 1}
	a := newTestAdmissions(k, Decision{Group: "shop", Admission: adm})
	client := netip.MustParseAddr("192.0.2.1")
	if !a.tryAdmit("shop", adm, 1, client) || !a.tryAdmit("shop", adm, 2, client) {
		t.Error("a connection was refused on a guess while the kernel could not be asked")
	}
}

// The record forgets closed connections as it grows, so a class that never
// reaches its cap does not keep every connection it ever admitted.
func TestAdmissionRecordStaysBounded(t *testing.T) {
	k := &fakeKernel{open: map[uint64]bool{}}
	adm := &Admission{MaxConnections: 1 << 20}
	a := newTestAdmissions(k, Decision{Group: "shop", Admission: adm})
	client := netip.MustParseAddr("192.0.2.1")
	for cookie := uint64(1); cookie <= 100_000; cookie++ {
		if !a.tryAdmit("shop", adm, cookie, client) {
			t.Fatalf("connection %d refused", cookie)
		}
		// Each connection closes before the next comes.
	}
	if n := len(a.conns); n > recordSlack+1 {
		t.Errorf("after 100000 connections that all closed the record holds %d", n)
	}
	if k.asked > 100_000/recordSlack+1 {
		t.Errorf("the kernel was asked %d times for 100000 connections; the count should be amortised", k.asked)
	}
}

// admissionClassifier gives every connection one decision, and lets a
// listener on a specific address decide it, as an address table does: a
// cap must still take each connection in hand.
type admissionClassifier struct {
	d       Decision
	timeout time.Duration
}

func (c admissionClassifier) ClassifyAddr(netip.AddrPort) Decision { return c.d }
func (c admissionClassifier) ClassifyListener(bound netip.AddrPort) (Decision, bool) {
	return c.d, !bound.Addr().IsUnspecified()
}
func (admissionClassifier) NamesApply(netip.AddrPort) bool { return false }
func (c admissionClassifier) ClassifyName(string, netip.AddrPort) Decision {
	return c.d
}
func (c admissionClassifier) SniffLimits() (time.Duration, int)           { return c.timeout, 16384 }
func (admissionClassifier) ProxyTrusted(netip.AddrPort) bool              { return false }
func (c admissionClassifier) ClassifyPath(string) Decision                { return c.d }
func (c admissionClassifier) ListenerDecidesPath(string) (Decision, bool) { return c.d, true }
func (admissionClassifier) NamesApplyPath(string) bool                    { return false }
func (c admissionClassifier) ClassifyNameOnPath(string, string) Decision  { return c.d }

// keep has the test server accept and keep one connection; it returns
// the result (Ret is the server's fd of it).
func (h *harness) keep() acceptResult {
	h.t.Helper()
	h.command("accept4 0 keep")
	r := h.result()
	if r.Ret < 0 {
		h.t.Fatalf("accept failed: errno %d", r.Errno)
	}
	return r
}

// dialFrom connects to the test server from a chosen loopback address.
func (h *harness) dialFrom(ip string) net.Conn {
	h.t.Helper()
	d := net.Dialer{Timeout: patience, LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	c, err := d.Dial("tcp", h.addr)
	if err != nil {
		h.t.Fatalf("connecting from %s: %v", ip, err)
	}
	h.t.Cleanup(func() { c.Close() })
	return c
}

// A class with max_connections = 2 on a listener whose address decides:
// two connections are served in it with its mark, a third by the
// alternate, and once the server closes one, the next is the class's again.
func TestAdmissionCapSendsToAlternate(t *testing.T) {
	alternate := Decision{Group: "overflow", DSCP: 10}
	shop := Decision{Group: "shop", DSCP: 34, Admission: &Admission{MaxConnections: 2, Alternate: &alternate}}
	h := startServerWith(t, "127.0.0.1:0", false, admissionClassifier{d: shop, timeout: time.Second})
	var kept []acceptResult
	for i, want := range []Decision{shop, shop, alternate} {
		h.dial()
		r := h.keep()
		if r.TOS != want.DSCP<<2 || h.placer.groupOf(r.Pid) != want.Group {
			t.Errorf("connection %d: TOS %#x in %q; want %s (DSCP %d)", i+1, r.TOS, h.placer.groupOf(r.Pid), want.Group, want.DSCP)
		}
		kept = append(kept, r)
	}
	if st := h.sup.Admissions()["shop"]; st.Open != 2 || st.Admitted != 2 || st.Alternate != 1 || st.Refused != 0 {
		t.Errorf("shop's admission counters %+v; want 2 open, 2 admitted, 1 alternate", st)
	}
	if n := h.sup.Stats().Continued.Load(); n > 1 {
		t.Errorf("%d accepts were left to the kernel on a listener with a cap of 2; at most half the cap may be", n)
	}
	h.command("close " + strconv.Itoa(kept[0].Ret))
	if l := h.line(); l != "ok" {
		t.Fatal(l)
	}
	h.dial()
	if r := h.keep(); r.TOS != shop.DSCP<<2 || h.placer.groupOf(r.Pid) != "shop" {
		t.Errorf("after the server closed one of shop's 2: TOS %#x in %q; want shop's", r.TOS, h.placer.groupOf(r.Pid))
	}
	if st := h.sup.Admissions()["shop"]; st.Open != 2 || st.Admitted != 3 {
		t.Errorf("shop's admission counters %+v; want 2 open, 3 admitted", st)
	}
}

func TestAdmissionPerClientOnRealConnections(t *testing.T) {
	alternate := Decision{Group: "overflow", DSCP: 10}
	shop := Decision{Group: "shop", DSCP: 34, Admission: &Admission{MaxConnectionsPerIP: 1, Alternate: &alternate}}
	h := startServerWith(t, "127.0.0.1:0", false, admissionClassifier{d: shop, timeout: time.Second})
	for _, tc := range []struct {
		from string
		want Decision
	}{{"127.0.0.2", shop}, {"127.0.0.3", shop}, {"127.0.0.2", alternate}, {"127.0.0.3", alternate}} {
		h.dialFrom(tc.from)
		if r := h.keep(); r.TOS != tc.want.DSCP<<2 {
			t.Errorf("from %s: TOS %#x; want %s's (DSCP %d)", tc.from, r.TOS, tc.want.Group, tc.want.DSCP)
		}
	}
}

// With nothing recorded (no class has a cap, or none admitted anything),
// status asks the kernel nothing.
func TestAdmissionStatsWithoutCapsAskNothing(t *testing.T) {
	k := &fakeKernel{open: map[uint64]bool{}}
	a := newTestAdmissions(k, Decision{Group: "shop"})
	if st := a.stats(); len(st) != 0 || k.asked != 0 {
		t.Errorf("stats %v, kernel asked %d times; want none and 0", st, k.asked)
	}
}

// Accepts left to the kernel reserve a connection each, up to half the
// cap; the count then sees the connections the kernel accepted (by their
// listener's address) and the threads still waiting, and makes room only
// for connections the server closed.
func TestAdmissionReservations(t *testing.T) {
	k := &fakeKernel{open: map[uint64]bool{}, accepted: map[uint64]netip.AddrPort{}, waiting: map[int]bool{}}
	shop := Decision{Group: "shop", Admission: &Admission{MaxConnections: 8}}
	a := newTestAdmissions(k, shop)
	a.noteFast(fastShop)
	for tid := 1; tid <= 4; tid++ {
		if !a.reserve(tid, 100, 3, shop) {
			t.Fatalf("reservation %d of a cap of 8 refused", tid)
		}
		k.waiting[tid] = true
	}
	if a.reserve(5, 100, 3, shop) {
		t.Fatal("a 5th thread was left to the kernel under a cap of 8: more than half")
	}
	// Threads 1 and 2 took a connection each and came back for more.
	for tid, cookie := range map[int]uint64{1: 101, 2: 102} {
		k.accepted[cookie] = fastShop
		delete(k.waiting, tid)
		a.returned(tid)
	}
	if a.reserve(5, 100, 3, shop) {
		t.Fatal("left to the kernel while 2 connections and 2 waiting threads hold half the cap")
	}
	if st := a.stats()["shop"]; st.Open != 2 || st.Admitted != 2 {
		t.Errorf("stats %+v; want 2 open (the kernel's), 2 admitted (threads still waiting are not)", st)
	}
	// The server closed one; emulated admissions fill the rest of the cap.
	delete(k.accepted, 101)
	client := netip.MustParseAddr("192.0.2.1")
	admitted := 0
	for cookie := uint64(1); cookie <= 10; cookie++ {
		if a.tryAdmit("shop", shop.Admission, cookie, client) {
			k.open[cookie] = true
			admitted++
		}
	}
	if admitted != 5 {
		t.Errorf("%d admitted beside 1 kernel connection and 2 waiting threads under a cap of 8; want 5", admitted)
	}
	if a.reserve(6, 100, 3, Decision{Group: "blog", Admission: &Admission{MaxConnections: 100, MaxConnectionsPerIP: 5}}) {
		t.Error("a class with a cap per client was left to the kernel, which cannot tell clients apart before accept")
	}
}

// A thread seen running just after its accept was left to the kernel may
// be on its way into it and keeps its place. One running long after is
// either woken in its accept, its connection not yet a file the count can
// see, and keeps its place, or serving the connection it took, which the
// count sees in its process: counted once either way.
func TestAdmissionReservationOfARunningThread(t *testing.T) {
	k := &fakeKernel{open: map[uint64]bool{}, accepted: map[uint64]netip.AddrPort{}, running: map[int]bool{1: true}, holds: map[int][]uint64{}}
	shop := Decision{Group: "shop", Admission: &Admission{MaxConnections: 2}}
	a := newTestAdmissions(k, shop)
	a.noteFast(fastShop)
	if !a.reserve(1, 100, 3, shop) {
		t.Fatal("the first accept of a cap of 2 was not left to the kernel")
	}
	client := netip.MustParseAddr("192.0.2.1")
	if !a.tryAdmit("shop", shop.Admission, 10, client) {
		t.Fatal("refused beside one reservation under a cap of 2")
	}
	k.open[10] = true
	if a.tryAdmit("shop", shop.Admission, 11, client) {
		t.Fatal("admitted a third while a thread that just got its accept runs")
	}
	// Long after, the thread is woken in its accept: the connection it
	// takes is in no count yet, nor in its process.
	r := a.reservations[1]
	r.made = r.made.Add(-time.Second)
	a.reservations[1] = r
	if a.tryAdmit("shop", shop.Admission, 12, client) {
		t.Fatal("admitted a third while a thread woken long after its reservation takes its connection")
	}
	// Then it serves it: its process holds the connection the count sees.
	k.accepted[20] = fastShop
	k.holds[100] = []uint64{20}
	if a.tryAdmit("shop", shop.Admission, 13, client) {
		t.Fatal("admitted a third beside the connection the running thread serves")
	}
	if st := a.stats()["shop"]; st.Open != 2 {
		t.Errorf("stats %+v; want 2 open, counted once each", st)
	}
	// It closed it and came back for another.
	delete(k.accepted, 20)
	k.holds[100] = nil
	a.returned(1)
	if !a.tryAdmit("shop", shop.Admission, 14, client) {
		t.Fatal("refused after the running thread's connection closed")
	}
}

// ageAdmissions makes d pass for a's record: its reservations were made,
// and the kernel's connections first seen, d earlier.
func ageAdmissions(a *admissions, d time.Duration) {
	for tid, r := range a.reservations {
		r.made = r.made.Add(-d)
		a.reservations[tid] = r
	}
	for ino, seen := range a.kernelSeen {
		if !seen.first.IsZero() {
			seen.first = seen.first.Add(-d)
			a.kernelSeen[ino] = seen
		}
	}
}

// Threads of one process running long after their reservations: only the
// connections the process holds that a count first saw after the
// reservations were made end them, one each; a connection it held before
// does not stand for a woken thread's, still queued, and one a count saw
// while the reservation was young still ends it once its thread runs on.
func TestAdmissionRunningThreadsOfOneProcess(t *testing.T) {
	for _, tc := range []struct {
		name string
		// threads running long after their reservation, in process 100
		threads int
		// before: connections the process holds at the first count
		before []uint64
		// since: connections it took after that count
		since []uint64
		// seenYoung: a count saw since's connections while the
		// reservations were young
		seenYoung bool
		// room is how many more connections a cap of 6 admits
		room int
	}{
		{name: "a woken thread beside a connection held before", threads: 1, before: []uint64{30}, room: 6 - 1 - 1},
		{name: "two woken threads, one serving what it took", threads: 2, since: []uint64{31}, room: 6 - 2},
		{name: "the one woken thread serving what it took", threads: 1, before: []uint64{30}, since: []uint64{33}, room: 6 - 2},
		{name: "a thread serving what a count saw while it was young", threads: 1, since: []uint64{34}, seenYoung: true, room: 6 - 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := &fakeKernel{open: map[uint64]bool{}, accepted: map[uint64]netip.AddrPort{}, running: map[int]bool{}, holds: map[int][]uint64{}}
			shop := Decision{Group: "shop", Admission: &Admission{MaxConnections: 6}}
			a := newTestAdmissions(k, shop)
			a.noteFast(fastShop)
			for _, c := range tc.before {
				k.accepted[c] = fastShop
				k.holds[100] = append(k.holds[100], c)
			}
			a.mu.Lock()
			a.recount(0)
			a.mu.Unlock()
			ageAdmissions(a, time.Second)
			for tid := 1; tid <= tc.threads; tid++ {
				if !a.reserve(tid, 100, 3, shop) {
					t.Fatalf("reservation %d refused", tid)
				}
				k.running[tid] = true
			}
			for _, c := range tc.since {
				k.accepted[c] = fastShop
				k.holds[100] = append(k.holds[100], c)
			}
			if tc.seenYoung {
				a.mu.Lock()
				a.recount(0)
				a.mu.Unlock()
			}
			ageAdmissions(a, time.Second)
			client := netip.MustParseAddr("192.0.2.1")
			admitted := 0
			for c := uint64(1); c <= 10; c++ {
				if a.tryAdmit("shop", shop.Admission, c, client) {
					k.open[c] = true
					admitted++
				}
			}
			if admitted != tc.room {
				t.Errorf("admitted %d, want %d", admitted, tc.room)
			}
		})
	}
}

// Over-limit decisions are logged as a summary: the first at once, then at
// most one line per 10 s per vhost with what happened since.
func TestAdmissionOverLimitLog(t *testing.T) {
	var lines []string
	a := newAdmissions(slog.New(slog.NewTextHandler(lineWriter(func(l string) { lines = append(lines, l) }), nil)), nil)
	for range 50 {
		a.overLimit("vhost-shop", "shop", false, "default")
	}
	a.overLimit("vhost-blog", "blog", true, "")
	if len(lines) != 2 {
		t.Fatalf("%d log lines for 51 decisions over the caps of 2 vhosts; want one per vhost:\n%s", len(lines), strings.Join(lines, ""))
	}
	// 10 s later (the limiter's clock moved back), the rest of shop's.
	a.classes["vhost-shop"].overLog.last.Store(time.Now().Add(-11 * time.Second).UnixNano())
	a.overLimit("vhost-shop", "shop", true, "")
	if len(lines) != 3 || !strings.Contains(lines[2], "vhost=shop") || !strings.Contains(lines[2], "sent_to_alternate=49") || !strings.Contains(lines[2], "refused=1") {
		t.Errorf("summary after 10 s: %q; want shop's 49 sent to the alternate and 1 refused since the first line", lines[len(lines)-1])
	}
}

// lineWriter hands each write (a log line) to f.
type lineWriter func(string)

func (w lineWriter) Write(b []byte) (int, error) {
	w(string(b))
	return len(b), nil
}

// What a supervisor hands its successor (vhqos upgrade) keeps the caps:
// the successor counts the same connections and carries the counters on.
func TestAdmissionRecordHandedOver(t *testing.T) {
	k := &fakeKernel{open: map[uint64]bool{}, accepted: map[uint64]netip.AddrPort{}, waiting: map[int]bool{7: true}}
	shop := Decision{Group: "shop", Admission: &Admission{MaxConnections: 4}}
	old := newTestAdmissions(k, shop)
	old.noteFast(fastShop)
	if !old.reserve(7, 100, 3, shop) {
		t.Fatal("no reservation")
	}
	client := netip.MustParseAddr("192.0.2.1")
	for cookie := uint64(1); cookie <= 2; cookie++ {
		if !old.tryAdmit("shop", shop.Admission, cookie, client) {
			t.Fatal("refused under the cap")
		}
		k.open[cookie] = true
	}
	old.overLimit("shop", "shop", true, "")
	k.accepted[50] = fastShop // the kernel accepted one on the fast listener
	data, err := json.Marshal(old.snapshot())
	if err != nil {
		t.Fatal(err)
	}
	var rec AdmissionRecord
	if err := json.Unmarshal(data, &rec); err != nil {
		t.Fatal(err)
	}
	succ := newTestAdmissions(k, shop)
	succ.adopt(rec)
	if succ.tryAdmit("shop", shop.Admission, 3, client) {
		t.Error("the successor admitted a 5th: 2 recorded, 1 accepted by the kernel and 1 thread waiting hold a cap of 4")
	}
	if st := succ.stats()["shop"]; st.Open != 3 || st.Refused != 1 || st.Admitted != 2 {
		t.Errorf("successor's stats %+v; want 3 open, 2 admitted (the waiting thread not yet), 1 refused (handed over)", st)
	}
	// The thread, long after, runs (woken in its accept): the connection
	// the server held before the hand-over does not stand for its own.
	delete(k.waiting, 7)
	k.running = map[int]bool{7: true}
	k.holds = map[int][]uint64{100: {50}}
	ageAdmissions(succ, time.Second)
	if succ.tryAdmit("shop", shop.Admission, 4, client) {
		t.Error("the successor admitted a 5th when the handed-over thread woke: the connection its process held before counted as the thread's")
	}
}

// A supervisor started while the server holds connections the kernel
// accepted on a capped class's listener (after a crash) counts them
// before it leaves the first accept to the kernel.
func TestAdmissionCountsWhatTheKernelAcceptedBefore(t *testing.T) {
	k := &fakeKernel{open: map[uint64]bool{}, accepted: map[uint64]netip.AddrPort{1: fastShop, 2: fastShop, 3: fastShop}, waiting: map[int]bool{}}
	shop := Decision{Group: "shop", Admission: &Admission{MaxConnections: 4}}
	a := newTestAdmissions(k, shop)
	a.noteFast(fastShop)
	if a.reserve(9, 100, 3, shop) {
		t.Error("left an accept to the kernel while 3 of a cap of 4 are open")
	}
	if !a.tryAdmit("shop", shop.Admission, 10, netip.MustParseAddr("192.0.2.1")) {
		t.Error("refused the 4th of a cap of 4")
	}
	k.open[10] = true
	if a.tryAdmit("shop", shop.Admission, 11, netip.MustParseAddr("192.0.2.1")) {
		t.Error("admitted a 5th under a cap of 4")
	}
}

// A count that fails leaves the figures as they were: a cap reached stays
// reached, rather than read as empty.
func TestAdmissionFailedCountKeepsTheFigures(t *testing.T) {
	k := &fakeKernel{open: map[uint64]bool{}}
	adm := &Admission{MaxConnections: 2}
	a := newTestAdmissions(k, Decision{Group: "shop", Admission: adm})
	client := netip.MustParseAddr("192.0.2.1")
	for cookie := uint64(1); cookie <= 2; cookie++ {
		a.tryAdmit("shop", adm, cookie, client)
		k.open[cookie] = true
	}
	k.fail = errors.New("sock_diag unavailable")
	a.tryAdmit("shop", adm, 3, client) // admitted on the failure: best effort
	k.fail = nil
	k.open[3] = true
	if a.tryAdmit("shop", adm, 4, client) {
		t.Error("a 4th was admitted under a cap of 2 after a failed count")
	}
}
