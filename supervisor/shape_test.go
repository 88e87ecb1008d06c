package supervisor

import (
	"log/slog"
	"net"
	"testing"

	"golang.org/x/sys/unix"
)

func TestDecideShaping(t *testing.T) {
	own := shaping{mark: 5, pacing: unlimitedPacing}
	for _, tc := range []struct {
		name   string
		class  shaping
		marked bool
		want   shapeWrite
	}{
		{"no rates, never shaped: left alone", shaping{}, false, shapeWrite{to: own}},
		{"no rates, maybe shaped: own back", shaping{}, true, shapeWrite{to: own, setMark: true, setPacing: true}},
		{"both rates", shaping{mark: 0x76680002, pacing: 1e6}, false, shapeWrite{to: shaping{0x76680002, 1e6}, setMark: true, setPacing: true}},
		{"egress only, never shaped: pacing left alone", shaping{mark: 0x76680002}, false, shapeWrite{to: shaping{0x76680002, unlimitedPacing}, setMark: true}},
		{"connection only, maybe shaped: own mark back", shaping{pacing: 1e6}, true, shapeWrite{to: shaping{5, 1e6}, setMark: true, setPacing: true}},
	} {
		if got := decideShaping(tc.class, own, tc.marked); got != tc.want {
			t.Errorf("%s: %+v, want %+v", tc.name, got, tc.want)
		}
	}
}

// What vhqos relies on for listeners whose connections the kernel
// accepts: an accepted TCP socket inherits its listener's SO_MARK and
// SO_MAX_PACING_RATE.
func TestShapingInherited(t *testing.T) {
	lfd, addr := kernelListener(t, "127.0.0.1:0")
	want := shaping{mark: 0x76680009, pacing: 125000}
	if err := setShaping(lfd, shapeWrite{to: want, setMark: true, setPacing: true}); err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fd, _, err := unix.Accept(lfd)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if got := currentShaping(fd); got != want {
		t.Errorf("accepted socket carries %+v, want its listener's %+v", got, want)
	}
	info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil || info.Max_pacing_rate != want.pacing {
		t.Errorf("tcp_info max_pacing_rate %d (%v), want %d", info.Max_pacing_rate, err, want.pacing)
	}
}

// A listener shaped for a class gets its own values back, field by field,
// when the class loses them.
func TestShapeListenerGivesOwnBack(t *testing.T) {
	s := &Supervisor{log: slog.New(slog.DiscardHandler)}
	lfd, _ := kernelListener(t, "127.0.0.1:0")
	own := shaping{mark: 0x42, pacing: 1 << 30}
	if err := setShaping(lfd, shapeWrite{to: own, setMark: true, setPacing: true}); err != nil { // the server's own
		t.Fatal(err)
	}
	l := &listener{fd: lfd, family: unix.AF_INET, markedDSCP: -1}
	for _, step := range []struct{ class, want shaping }{
		{shaping{0x76680002, 125000}, shaping{0x76680002, 125000}},
		{shaping{pacing: 250000}, shaping{0x42, 250000}},
		{shaping{mark: 0x76680003}, shaping{0x76680003, 1 << 30}},
		{shaping{}, own},
	} {
		s.markListener(l, Decision{DSCP: -1, Mark: step.class.mark, Pacing: step.class.pacing})
		if got := currentShaping(lfd); got != step.want || l.shaped != step.class {
			t.Fatalf("after shaping for %+v: listener carries %+v (recorded %+v), want %+v", step.class, got, l.shaped, step.want)
		}
	}
}

// shapingOf reads the mark and pacing cap of the socket at fd in process
// pid.
func shapingOf(t *testing.T, pid, fd int) shaping {
	t.Helper()
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		t.Fatalf("pidfd_open(%d): %v", pid, err)
	}
	defer unix.Close(pidfd)
	copyFd, err := unix.PidfdGetfd(pidfd, fd, 0)
	if err != nil {
		t.Fatalf("pidfd_getfd(%d, %d): %v", pid, fd, err)
	}
	defer unix.Close(copyFd)
	return currentShaping(copyFd)
}

// On both accept paths the server gets its connection with the class's
// mark and pacing cap already set; a reload gives open connections their
// class's new ones, and takes back what the class no longer has.
func TestAcceptShapesAndReloadReshapes(t *testing.T) {
	shop := Decision{Group: "shop", DSCP: 34, Mark: 0x76680007, Pacing: 125000}
	for _, path := range acceptPaths {
		t.Run(path.name, func(t *testing.T) {
			h := startServerWith(t, "127.0.0.1:0", path.emulate, fixedClassifier{shop})
			h.command("accept4 0 keep")
			if !path.emulate {
				// A connection takes its mark from the listener when its
				// SYN arrives (inet_request_mark): dialed before vhqos
				// saw the accept and marked the listener, it would have
				// none.
				waitFor(t, "the accept let through to the kernel", func() bool { return h.sup.stats.Continued.Load() > 0 })
			}
			c, _ := h.dial()
			defer c.Close()
			r := h.result()
			if r.Ret < 0 {
				t.Fatalf("accept: errno %v", unix.Errno(r.Errno))
			}
			if r.Mark != shop.Mark || r.Pacing != shop.Pacing || r.TOS != shop.DSCP<<2 {
				t.Errorf("accepted with mark %#x, pacing %d, TOS %#x; want %#x, %d, DSCP %d", r.Mark, r.Pacing, r.TOS, shop.Mark, shop.Pacing, shop.DSCP)
			}
			for _, step := range []struct {
				d    Decision
				want shaping
			}{
				{Decision{Group: "shop", DSCP: 34, Pacing: 250000}, shaping{0, 250000}},
				{Decision{Group: "default", DSCP: -1}, shaping{0, unlimitedPacing}},
			} {
				h.sup.SetClassifier(fixedClassifier{step.d})
				h.sup.Reclassify()
				if got := shapingOf(t, h.pid, r.Ret); got != step.want {
					t.Errorf("after the reload to %+v the open connection carries %+v, want %+v", step.d, got, step.want)
				}
			}
			h.command("accept4 0 full")
			c2, _ := h.dial()
			defer c2.Close()
			if r := h.result(); r.Mark != 0 || r.Pacing != unlimitedPacing {
				t.Errorf("a connection made after the rates went: mark %#x, pacing %d; want none", r.Mark, r.Pacing)
			}
		})
	}
}
