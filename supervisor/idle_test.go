package supervisor

import (
	"testing"
	"time"

	"github.com/vhqos/vhqos/cgroup"
)

// Tests of idle.go: under accept tracking a process that has served and
// now waits for the next connection outside accept (in poll, as Apache
// prefork does with several listeners) goes home at the next sweep; one
// waiting in accept stays in the class it was placed for, since that is
// the class of the connection it is about to take.
func TestIdleProcessesGoHome(t *testing.T) {
	for _, tc := range []struct {
		name     string
		children string
		wantHome bool
	}{
		{"waits in poll", "pollchildren 1", true},
		{"waits in accept", "children 1", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := startServer(t, "127.0.0.1:0", false)
			h.command(tc.children)
			if l := h.line(); l != "ok" {
				t.Fatal(l)
			}
			c, _ := h.dial()
			pid := servedBy(t, c)
			if !h.placer.wasIn(pid, "shop") {
				t.Fatalf("the serving process %d was never in shop (%q)", pid, h.placer.groupOf(pid))
			}
			if tc.wantHome {
				waitFor(t, "the idle process sent home", func() bool { return h.placer.groupOf(pid) == cgroup.HomeGroup })
				return
			}
			// Two sweeps and more: a process in accept is still where it
			// was placed.
			time.Sleep(2*sweepEvery + sweepEvery/2)
			if g := h.placer.groupOf(pid); g != "shop" {
				t.Errorf("a process waiting in accept went to %q, want it left in shop", g)
			}
		})
	}
}

// A process that serves a connection every few hundred milliseconds
// stays in its class although it looks idle between them (no connection,
// waiting in poll): moving it home and back at every sweep would cost two
// cgroup migrations a second. Once it serves nothing for a sweep, it goes.
func TestServingProcessStaysPlaced(t *testing.T) {
	h := startServer(t, "127.0.0.1:0", false)
	h.command("pollchildren 1")
	if l := h.line(); l != "ok" {
		t.Fatal(l)
	}
	c, _ := h.dial()
	pid := servedBy(t, c)
	c.Close()
	for end := time.Now().Add(3 * sweepEvery); time.Now().Before(end); time.Sleep(sweepEvery / 5) {
		c, _ := h.dial()
		if p := servedBy(t, c); p != pid {
			t.Fatalf("served by %d, want the one child %d", p, pid)
		}
		c.Close()
	}
	if h.placer.wasIn(pid, cgroup.HomeGroup) {
		t.Errorf("a process serving every %v was sent home", sweepEvery/5)
	}
	waitFor(t, "the process sent home once it serves nothing", func() bool { return h.placer.groupOf(pid) == cgroup.HomeGroup })
}
