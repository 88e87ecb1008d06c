package main

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// A server that tells systemd how it is doing (sd_notify(3): READY=1,
// STATUS=..., RELOADING=1, WATCHDOG=1; Type=notify units such as
// php8.2-fpm and haproxy) sends its messages to the socket NOTIFY_SOCKET
// names. Under vhqos the unit's main process is the keeper, and systemd
// takes messages only from the main process unless NotifyAccess=all; with
// that, the MAINPID=<its own pid> that php-fpm 8.2 and haproxy send with
// READY=1 would make the server the unit's main process, and stop and
// reload signals would bypass the keeper. So the keeper stands between:
// the server gets a socket of the keeper's as NOTIFY_SOCKET, and the
// keeper sends on to systemd, as itself, every message without its
// MAINPID= line, with the file descriptors it carries (FDSTORE=1,
// BARRIER=1).

// notifyProxy passes a server's notifications on to systemd.
type notifyProxy struct {
	log      *slog.Logger
	conn     *net.UnixConn      // the server sends here
	upstream *unix.SockaddrUnix // systemd's socket
	out      int                // an unbound datagram socket the keeper sends from
	done     chan struct{}
}

// notifyFrom returns the environment for the server and, when env has a
// NOTIFY_SOCKET the keeper can stand in for, the proxy now serving it
// (nil otherwise: env is returned as it is).
func notifyFrom(log *slog.Logger, env []string) ([]string, *notifyProxy, error) {
	var upstream string
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, "NOTIFY_SOCKET="); ok {
			upstream = v
		}
	}
	if upstream == "" {
		return env, nil, nil
	}
	if !strings.HasPrefix(upstream, "/") && !strings.HasPrefix(upstream, "@") {
		// vsock: and the like (systemd 253+, for VMs): passed on as
		// they are, with what that implies (NotifyAccess=all).
		log.Warn("NOTIFY_SOCKET is neither a path nor an abstract socket; the server gets it as it is", "NOTIFY_SOCKET", upstream)
		return env, nil, nil
	}
	var nonce [8]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return nil, nil, fmt.Errorf("naming the notification socket: %w", err)
	}
	// Abstract: nothing to clean up, and a PrivateTmp= or read-only
	// file system does not matter.
	name := "@vhqos-notify-" + strconv.Itoa(os.Getpid()) + "-" + hex.EncodeToString(nonce[:])
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		return nil, nil, fmt.Errorf("opening the server's notification socket: %w", err)
	}
	out, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("opening a socket to systemd's NOTIFY_SOCKET: %w", err)
	}
	// x/sys reads a leading @ as an abstract address, as sd_notify does.
	p := &notifyProxy{log: log, conn: conn, out: out, upstream: &unix.SockaddrUnix{Name: upstream}, done: make(chan struct{})}
	go p.serve()
	neu := make([]string, 0, len(env))
	for _, e := range env {
		if !strings.HasPrefix(e, "NOTIFY_SOCKET=") {
			neu = append(neu, e)
		}
	}
	return append(neu, "NOTIFY_SOCKET="+name), p, nil
}

// Close stops passing notifications on.
func (p *notifyProxy) Close() {
	if p == nil {
		return
	}
	p.conn.Close()
	<-p.done
	unix.Close(p.out)
}

func (p *notifyProxy) serve() {
	defer close(p.done)
	buf := make([]byte, 64<<10)
	oob := make([]byte, unix.CmsgSpace(253*4)) // SCM_MAX_FD fds
	for {
		n, oobn, _, _, err := p.conn.ReadMsgUnix(buf, oob)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			p.log.Warn("reading the server's notification", "err", err)
			continue
		}
		fds := receivedFds(oob[:oobn])
		msg := withoutMainPID(buf[:n])
		if len(bytes.TrimSpace(msg)) > 0 || len(fds) > 0 {
			var rights []byte
			if len(fds) > 0 {
				rights = unix.UnixRights(fds...)
			}
			if err := unix.Sendmsg(p.out, msg, rights, p.upstream, 0); err != nil {
				p.log.Warn("passing the server's notification on to systemd", "err", err, "message", string(msg))
			}
		}
		for _, fd := range fds {
			unix.Close(fd)
		}
	}
}

// withoutMainPID drops the MAINPID= lines of a notification: the unit's
// main process stays the keeper.
func withoutMainPID(msg []byte) []byte {
	lines := bytes.Split(msg, []byte("\n"))
	kept := lines[:0]
	for _, l := range lines {
		if !bytes.HasPrefix(l, []byte("MAINPID=")) {
			kept = append(kept, l)
		}
	}
	return bytes.Join(kept, []byte("\n"))
}

// receivedFds returns the file descriptors a message carried.
func receivedFds(oob []byte) []int {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	var fds []int
	for _, m := range msgs {
		if r, err := unix.ParseUnixRights(&m); err == nil {
			fds = append(fds, r...)
		}
	}
	return fds
}
