package supervisor

import (
	"net"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// Tests of sockdiag.go: the kernel's list of live sockets has a connection
// while some process holds it, of either kind the supervisor follows, and
// not once every process has closed it.

func TestLiveSocketInodes(t *testing.T) {
	for _, tc := range []struct {
		name    string
		network string
		address func(t *testing.T) string
	}{
		{"TCP", "tcp", func(*testing.T) string { return "127.0.0.1:0" }},
		{"unix path", "unix", func(t *testing.T) string { return filepath.Join(t.TempDir(), "s.sock") }},
		{"unix abstract", "unix", func(t *testing.T) string { return "@vhqos-sockdiag-test-" + t.Name() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen(tc.network, tc.address(t))
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			client, err := net.Dial(tc.network, ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer client.Close()
			server, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			ino, lino := fileInode(t, server), fileInode(t, ln)
			live, err := liveSocketInodes(true)
			if err != nil {
				t.Fatal(err)
			}
			if !live[ino] {
				t.Fatalf("the accepted connection (inode %d) is not among the %d live sockets", ino, len(live))
			}
			// Listener copies are forgotten when their inode is not
			// live: a listener must be, whether connections are asked
			// for or not. TCP connections are listed only when asked
			// for; unix ones always are (their table is small).
			if !live[lino] {
				t.Fatalf("the listener (inode %d) is not among the %d live sockets", lino, len(live))
			}
			listeners, err := liveSocketInodes(false)
			if err != nil {
				t.Fatal(err)
			}
			if !listeners[lino] {
				t.Fatalf("asked for listeners only: the listener (inode %d) is not among the %d live sockets", lino, len(listeners))
			}
			if tc.network == "tcp" && listeners[ino] {
				t.Errorf("asked for listeners only: the TCP connection (inode %d) is listed too", ino)
			}
			server.Close()
			client.Close()
			if live, err = liveSocketInodes(true); err != nil {
				t.Fatal(err)
			}
			if live[ino] {
				t.Errorf("the connection (inode %d) is still live after both ends closed", ino)
			}
		})
	}
}

// fileInode is the inode of the socket of a net.Conn or net.Listener, as
// fstat and /proc/PID/fd see it.
func fileInode(t *testing.T, c any) uint64 {
	t.Helper()
	f, err := c.(interface{ File() (*os.File, error) }).File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}
