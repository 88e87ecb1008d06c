package main

import (
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fakeSystemd is a NOTIFY_SOCKET as systemd has one: a datagram socket
// that receives the notifications and the fds they carry.
type fakeSystemd struct {
	conn *net.UnixConn
}

func (f *fakeSystemd) receive(t *testing.T) (string, []int) {
	t.Helper()
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(4*4))
	f.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, oobn, _, _, err := f.conn.ReadMsgUnix(buf, oob)
	if err != nil {
		t.Fatalf("systemd received nothing: %v", err)
	}
	return string(buf[:n]), receivedFds(oob[:oobn])
}

// sdNotify sends a message as sd_notify(3) does, to the socket
// NOTIFY_SOCKET names in env, with fds.
func sdNotify(t *testing.T, env []string, msg string, fds ...int) {
	t.Helper()
	var addr string
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, "NOTIFY_SOCKET="); ok {
			addr = v
		}
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	var rights []byte
	if len(fds) > 0 {
		rights = unix.UnixRights(fds...)
	}
	if err := unix.Sendmsg(fd, []byte(msg), rights, &unix.SockaddrUnix{Name: addr}, 0); err != nil {
		t.Fatalf("sd_notify to %s: %v", addr, err)
	}
}

// TestNotifyProxy: what the server sends to NOTIFY_SOCKET reaches
// systemd's socket without MAINPID=, fds included, for systemd's socket
// as a path and as an abstract name.
func TestNotifyProxy(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, upstream := range []string{"path", "abstract"} {
		t.Run(upstream, func(t *testing.T) {
			name := filepath.Join(t.TempDir(), "notify")
			if upstream == "abstract" {
				name = "@vhqos-test-systemd-" + filepath.Base(t.TempDir())
			}
			conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			sd := &fakeSystemd{conn: conn}
			env, p, err := notifyFrom(log, []string{"PATH=/bin", "NOTIFY_SOCKET=" + name, "X=1"})
			if err != nil || p == nil {
				t.Fatalf("no proxy: %v", err)
			}
			defer p.Close()
			var mine string
			for _, e := range env {
				if v, ok := strings.CutPrefix(e, "NOTIFY_SOCKET="); ok {
					mine = v
				}
			}
			if !strings.HasPrefix(mine, "@vhqos-notify-") || !slices.Contains(env, "PATH=/bin") || !slices.Contains(env, "X=1") || len(env) != 3 {
				t.Fatalf("the server's environment: %q", env)
			}

			for _, tc := range []struct{ sent, got string }{
				{"READY=1\nSTATUS=Ready to handle connections\nMAINPID=8851", "READY=1\nSTATUS=Ready to handle connections"},
				{"MAINPID=8851\nREADY=1\n", "READY=1\n"},
				{"RELOADING=1", "RELOADING=1"},
			} {
				sdNotify(t, env, tc.sent)
				if got, _ := sd.receive(t); got != tc.got {
					t.Errorf("sent %q, systemd got %q, want %q", tc.sent, got, tc.got)
				}
			}
			// A message of MAINPID= alone is not passed on: the next
			// one is what arrives.
			sdNotify(t, env, "MAINPID=8851")
			sdNotify(t, env, "WATCHDOG=1")
			if got, _ := sd.receive(t); got != "WATCHDOG=1" {
				t.Errorf("after a lone MAINPID=, systemd got %q, want WATCHDOG=1", got)
			}
			// FDSTORE=1: the fd arrives, and is the same pipe.
			var pipe [2]int
			if err := unix.Pipe2(pipe[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
				t.Fatal(err)
			}
			defer unix.Close(pipe[0])
			sdNotify(t, env, "FDSTORE=1\nFDNAME=x", pipe[1])
			unix.Close(pipe[1])
			got, fds := sd.receive(t)
			if got != "FDSTORE=1\nFDNAME=x" || len(fds) != 1 {
				t.Fatalf("FDSTORE: systemd got %q with %d fds", got, len(fds))
			}
			unix.Write(fds[0], []byte("through"))
			unix.Close(fds[0])
			b := make([]byte, 16)
			n, _ := unix.Read(pipe[0], b)
			if string(b[:n]) != "through" {
				t.Errorf("the fd systemd got is not the pipe: read %q", b[:n])
			}
			// The proxy keeps no copy: with systemd's closed, the pipe
			// comes to its end (BARRIER=1 relies on this). The proxy
			// closes its copy just after sending.
			for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
				n, err := unix.Read(pipe[0], b)
				if n == 0 && err == nil {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the pipe has a writer left after 10 s (read: %d, %v): the proxy kept the fd", n, err)
				}
			}
		})
	}
	t.Run("no NOTIFY_SOCKET", func(t *testing.T) {
		env := []string{"PATH=/bin"}
		got, p, err := notifyFrom(log, env)
		if err != nil || p != nil || !slices.Equal(got, env) {
			t.Errorf("got %q, %v, %v; want the environment as it was and no proxy", got, p, err)
		}
	})
}
