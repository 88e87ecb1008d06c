package supervisor

import (
	"crypto/sha256"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// limitClassifier is nameClassifier with the sniff limits of a table.
type limitClassifier struct {
	*nameClassifier
	bytes int
}

func (c limitClassifier) SniffLimits() (time.Duration, int) { return c.timeout, c.bytes }

// headOf is an HTTP request head of exactly n bytes asking for host.
func headOf(t *testing.T, n int, host string) []byte {
	head := "GET / HTTP/1.1\r\nHost: " + host + "\r\nX-Pad: "
	if n < len(head)+4 {
		t.Fatalf("no head of %d bytes", n)
	}
	return []byte(head + strings.Repeat("p", n-len(head)-4) + "\r\n\r\n")
}

// sendAll writes b and closes the sending side without blocking the test:
// a head larger than the socket buffers is only taken in as the server
// reads. The result arrives on the channel.
func sendAll(c net.Conn, b []byte) <-chan error {
	done := make(chan error, 1)
	go func() {
		_, err := c.Write(b)
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		done <- err
	}()
	return done
}

// sniff_bytes (README: "a request head or ClientHello not complete by then
// falls back") on real connections, at its smallest and largest values: a
// head of exactly sniff_bytes gets its vhost, one byte more the address's
// class, and the server reads every byte either way. The wait for bytes
// is a minute, so what decides is the byte count, never the clock.
func TestSniffBytesBounds(t *testing.T) {
	for _, limit := range []int{512, 65536} {
		t.Run(strconv.Itoa(limit), func(t *testing.T) {
			h := startServerWith(t, "127.0.0.1:0", true, limitClassifier{newNameClassifier(t, time.Minute), limit})
			h.command("serve 2")
			for _, tc := range []struct {
				size  int
				want  Decision
				found bool
			}{{limit, nameDecisions[0], true}, {limit + 1, defaultDecision, false}} {
				st := h.sup.Stats()
				found0, fell0 := st.NamesFound.Load(), st.NameFallbacks.Load()
				c, _ := h.dial()
				head := headOf(t, tc.size, "shop.example")
				sent := sendAll(c, head)
				r := readSum(t, c, 30*time.Second)
				if err := <-sent; err != nil {
					t.Fatalf("sending %d bytes: %v", tc.size, err)
				}
				if want := fmt.Sprintf("%x", sha256.Sum256(head)); r.sum != want {
					t.Errorf("head of %d bytes: the server received other bytes than the client sent", tc.size)
				}
				if r.tos != tc.want.DSCP<<2 || !h.placer.wasIn(r.pid, tc.want.Group) {
					t.Errorf("head of %d bytes with sniff_bytes %d: TOS %#x, process in %q; want %s (DSCP %d)", tc.size, limit, r.tos, h.placer.groupOf(r.pid), tc.want.Group, tc.want.DSCP)
				}
				found, fell := st.NamesFound.Load()-found0, st.NameFallbacks.Load()-fell0
				if tc.found && (found != 1 || fell != 0) || !tc.found && (found != 0 || fell != 1) {
					t.Errorf("head of %d bytes: names found %d, fallbacks %d", tc.size, found, fell)
				}
			}
			if n := h.sup.Stats().NameTimeouts.Load(); n != 0 {
				t.Errorf("%d waits for a name timed out; the byte bound should have decided", n)
			}
			if l := h.line(); l != "ok" {
				t.Fatal(l)
			}
		})
	}
}

// unacked is how many bytes c sent that its peer has not acknowledged:
// once 0, they are in the receiving socket's queue.
func unacked(t *testing.T, c net.Conn) int {
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var n int
	var ioctlErr error
	if err := raw.Control(func(fd uintptr) { n, ioctlErr = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ) }); err != nil || ioctlErr != nil {
		t.Fatalf("SIOCOUTQ: %v %v", err, ioctlErr)
	}
	return n
}

// sniff_timeout at its smallest, 10ms: a head already there when the
// server accepts is read at once, however short the wait; a client that
// sends nothing is given up on, not before 10ms, and served in the
// address's class.
func TestSniffTimeoutSmallest(t *testing.T) {
	const timeout = 10 * time.Millisecond
	h := startServerWith(t, "127.0.0.1:0", true, limitClassifier{newNameClassifier(t, timeout), 16384})

	c, _ := h.dial()
	head := headOf(t, 2000, "shop.example")
	send(t, c, [][]byte{head}, 0)
	// Wait until the server's socket holds the whole head, so that no
	// clock matters: the supervisor finds it on its first look.
	for deadline := time.Now().Add(10 * time.Second); unacked(t, c) > 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the server's socket never took the request")
		}
	}
	h.command("serve 1")
	r := readSum(t, c, 10*time.Second)
	if l := h.line(); l != "ok" {
		t.Fatal(l)
	}
	if r.tos != nameDecisions[0].DSCP<<2 || !h.placer.wasIn(r.pid, "shop") {
		t.Errorf("waiting head with sniff_timeout 10ms: TOS %#x, process in %q; want shop", r.tos, h.placer.groupOf(r.pid))
	}

	silent, _ := h.dial()
	silentAt := time.Now()
	h.command("serve 1")
	for deadline := time.Now().Add(10 * time.Second); h.sup.Stats().NameTimeouts.Load() == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the wait for a silent client's name never ended")
		}
	}
	if waited := time.Since(silentAt); waited < timeout {
		t.Errorf("a silent client was given up on after %v, before sniff_timeout %v", waited, timeout)
	}
	late := headOf(t, 100, "shop.example")
	send(t, silent, [][]byte{late}, 0)
	r = readSum(t, silent, 10*time.Second)
	if want := fmt.Sprintf("%x", sha256.Sum256(late)); r.sum != want {
		t.Errorf("silent client: the server received other bytes than the client sent")
	}
	if r.tos != defaultDecision.DSCP<<2 || !h.placer.wasIn(r.pid, "default") {
		t.Errorf("silent client: TOS %#x, process in %q; want the fallback, default", r.tos, h.placer.groupOf(r.pid))
	}
	if l := h.line(); l != "ok" {
		t.Fatal(l)
	}
}
