package shim

import (
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// InheritedFds lists the file descriptors from 3 up that the calling process
// received from its parent: the open ones without FD_CLOEXEC. Whoever
// started vhqos meant them for the server: systemd socket activation and
// systemd-socket-activate put the listening sockets at 3 ..
// 3+LISTEN_FDS-1 (sd_listen_fds(3)), nginx takes sockets named in $NGINX, and
// other launchers pass pipes or locks the same way.
//
// An fd the Go runtime or vhqos opened is close-on-exec (Go opens every fd
// with O_CLOEXEC / SOCK_CLOEXEC), so the flag tells the two apart whenever
// this is called; callers still call it first, before they open anything.
// It reads /proc/self/fd; the error says so if that fails.
func InheritedFds() ([]int, error) {
	dir, err := os.Open("/proc/self/fd")
	if err != nil {
		return nil, fmt.Errorf("listing the file descriptors vhqos inherited: %w", err)
	}
	defer dir.Close()
	names, err := dir.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("listing the file descriptors vhqos inherited: %w", err)
	}
	self := int(dir.Fd())
	var fds []int
	for _, name := range names {
		fd, err := strconv.Atoi(name)
		if err != nil || fd < 3 || fd == self {
			continue
		}
		flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
		if err != nil || flags&unix.FD_CLOEXEC != 0 {
			continue // gone meanwhile, or one of our own
		}
		fds = append(fds, fd)
	}
	sort.Ints(fds)
	return fds, nil
}

// fdLayout returns how many of exec.Cmd.ExtraFiles' slots the shim needs
// and which fd its control socket gets: the lowest number from 3 up that
// was not inherited. The inherited fds below it fill the slots before it,
// each at its own number (fd N is slot N-3), so the child only clears a
// FD_CLOEXEC they do not have; those above it are not named at all and
// cross fork and exec untouched, since nothing set FD_CLOEXEC on them.
// Few slots matter: Go's child moves its exec-error pipe to the first fd
// past the slots, which fails with EBADF beyond RLIMIT_NOFILE, and an
// inherited fd near that limit must not stop the server from starting.
// inherited must be sorted and hold numbers from 3 up.
func fdLayout(inherited []int) (slots, controlFd int) {
	controlFd = 3
	for _, fd := range inherited {
		if fd != controlFd {
			break
		}
		controlFd++
	}
	return controlFd - 3 + 1, controlFd
}

// withListenPID returns env with LISTEN_PID set to pid: sd_listen_fds(3)
// ignores LISTEN_FDS unless LISTEN_PID names the process that reads it,
// and the server is not the process the launcher started (vhqos is).
// Every other entry keeps its place and value.
func withListenPID(env []string, pid int) []string {
	out := make([]string, 0, len(env)+1)
	set := false
	for _, kv := range env {
		if strings.HasPrefix(kv, "LISTEN_PID=") {
			if set {
				continue // a duplicate: getenv would see only one
			}
			kv, set = "LISTEN_PID="+strconv.Itoa(pid), true
		}
		out = append(out, kv)
	}
	if !set {
		out = append(out, "LISTEN_PID="+strconv.Itoa(pid))
	}
	return out
}
