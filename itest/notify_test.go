package itest

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// notifyPy is a Type=notify server as php-fpm 8.2 and haproxy are: it
// tells NOTIFY_SOCKET it is ready, with MAINPID= naming itself.
const notifyPy = `
import os, socket, time
addr = os.environ["NOTIFY_SOCKET"]
if addr.startswith("@"):
    addr = "\0" + addr[1:]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.sendto(("READY=1\nSTATUS=serving\nMAINPID=%d" % os.getpid()).encode(), addr)
time.sleep(600)
`

// TestNotifyThroughKeeper: a server's sd_notify(3) messages reach
// systemd's NOTIFY_SOCKET from vhqos run itself (the keeper, the unit's
// main process), without the server's MAINPID=, so that a Type=notify
// unit needs no NotifyAccess=all and its main process stays vhqos.
func TestNotifyThroughKeeper(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "systemd-notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// As systemd does: the kernel then says who sent each message.
	raw, err := conn.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	raw.Control(func(fd uintptr) { err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED, 1) })
	if err != nil {
		t.Fatal(err)
	}
	qos := filepath.Join(dir, "qos.toml")
	writeFileT(t, qos, "[defaults]\ncpu_weight = 100\n")
	script := filepath.Join(dir, "notify.py")
	writeFileT(t, script, notifyPy)
	cmd := exec.Command(vhqosBinary(t), "run", "--stop-timeout", "10s", "--config", qos, "--status-socket", statusSocket(t), "--", "python3", script)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sock)
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			t.Errorf("vhqos run did not stop on SIGTERM:\n%s", out.String())
		}
	}()

	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(unix.SizeofUcred))
	conn.SetReadDeadline(time.Now().Add(2 * time.Minute))
	n, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
	if err != nil {
		t.Fatalf("no notification: %v\nvhqos run said:\n%s", err, out.String())
	}
	if got := string(buf[:n]); got != "READY=1\nSTATUS=serving" {
		t.Errorf("systemd got %q, want %q (MAINPID= left out)", got, "READY=1\nSTATUS=serving")
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		t.Fatalf("no credentials with the notification: %v", err)
	}
	cred, err := unix.ParseUnixCredentials(&msgs[0])
	if err != nil {
		t.Fatal(err)
	}
	if int(cred.Pid) != cmd.Process.Pid {
		t.Errorf("the notification came from pid %d, not from vhqos run (pid %d)", cred.Pid, cmd.Process.Pid)
	}
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
