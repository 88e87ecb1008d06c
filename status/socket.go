package status

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultSocket is where vhqos serves its status unless told otherwise.
const DefaultSocket = "/run/vhqos/status.sock"

// Listen opens the status socket at path, owned by root with mode 0600. A
// socket another live vhqos answers on is an error naming what to do; a
// stale one (its vhqos died) is replaced.
func Listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("making the status socket's directory: %w", err)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("another vhqos serves its status at %s; give this one its own with --status-socket", path)
	}
	os.Remove(path)
	old := unix.Umask(0o177)
	l, err := net.Listen("unix", path)
	unix.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("opening the status socket %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// Serve answers every client that is root with report(); others get a
// one-line refusal. It returns when ctx is done.
func Serve(ctx context.Context, l net.Listener, log *slog.Logger, report func() *Report) {
	go func() {
		<-ctx.Done()
		l.Close()
	}()
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go answer(c.(*net.UnixConn), log, report)
	}
}

func answer(c *net.UnixConn, log *slog.Logger, report func() *Report) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	uid, err := peerUID(c)
	if err != nil || uid != 0 {
		// The mode 0600 keeps others out already; this holds even if the
		// file's mode is changed or the socket is passed on.
		fmt.Fprintln(c, `{"error":"permission denied: vhqos status is for root only"}`)
		log.Warn("refused a status client that is not root", "uid", uid)
		return
	}
	json.NewEncoder(c).Encode(report())
}

func peerUID(c *net.UnixConn) (int, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	var cred *unix.Ucred
	var credErr error
	raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	})
	if credErr != nil {
		return -1, credErr
	}
	return int(cred.Uid), nil
}

// ErrNotRunning means nothing answers on the status socket.
var ErrNotRunning = errors.New("no vhqos is running")

// Fetch asks the vhqos at path for its report.
func Fetch(path string) (*Report, error) {
	c, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("%w (nothing at %s)", ErrNotRunning, path)
		}
		return nil, fmt.Errorf("connecting to %s: %w", path, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	// The answer is a report or a refusal; read twice rather than into one
	// struct embedding *Report, which would take Report's UnmarshalJSON
	// as its own and never see the error.
	var raw json.RawMessage
	if err := json.NewDecoder(c).Decode(&raw); err != nil {
		return nil, fmt.Errorf("reading the status from %s: %w", path, err)
	}
	var refusal struct {
		Error string `json:"error"`
	}
	if err := json.Unmarshal(raw, &refusal); err != nil {
		return nil, fmt.Errorf("reading the status from %s: %w", path, err)
	}
	if refusal.Error != "" {
		return nil, errors.New(refusal.Error)
	}
	r := &Report{}
	if err := json.Unmarshal(raw, r); err != nil {
		return nil, fmt.Errorf("reading the status from %s: %w", path, err)
	}
	return r, nil
}
