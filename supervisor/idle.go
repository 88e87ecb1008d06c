package supervisor

import (
	"bytes"
	"os"
	"strconv"

	"github.com/vhqos/vhqos/cgroup"
	"github.com/vhqos/vhqos/intercept"
	"golang.org/x/sys/unix"
)

// Idle processes under accept tracking. A process is placed in a class
// when it accepts a connection of it, and in accept tracking nothing
// tells vhqos when it is done: a server that waits for the next connection
// in accept is seen again there, but one that waits elsewhere (Apache
// prefork with several listeners polls them, or queues on its accept
// mutex; nginx sits in epoll_wait) would stay in the class it last served,
// counted against that class's tasks_max and its process count, for as
// long as it idles. The sweep sends such a process home: one that was
// placed by no accept since the last sweep, holds no connection (no
// socket but the listeners vhqos knows) and whose threads are all
// blocked, none in accept. A process in accept (or about to be: a running
// thread) is left alone, since it may have been placed for the connection
// it is accepting. A process that served since the last sweep stays: a
// server taking a connection every few hundred milliseconds looks idle
// between them, and moving it home and back each second costs two cgroup
// migrations, each of which waits for an RCU grace period under cgroup
// v1 (about 12 ms measured here).

// sendIdleHome moves home the processes of accept tracking that serve
// nothing. Runs in the sweep; fork and full tracking have their own
// (leaseBackstop).
func (s *Supervisor) sendIdleHome() {
	if s.track != intercept.TrackAccept {
		return
	}
	var listeners map[uint64]bool
	for _, p := range s.procs.all() {
		p.mu.Lock()
		if p.served {
			p.served = false
		} else if p.group != "" && p.group != cgroup.HomeGroup {
			if listeners == nil {
				listeners = s.listeners.inodes()
			}
			if idleProcess(p.tgid, listeners) {
				s.placeLocked(p, cgroup.HomeGroup)
			}
		}
		p.mu.Unlock()
	}
}

// idleProcess reports whether process pid holds no socket but the
// listeners (by inode) and has every thread blocked in a system call other
// than accept and accept4. A process that is gone is not idle: its exit
// is handled elsewhere.
func idleProcess(pid int, listeners map[uint64]bool) bool {
	tids := threads(pid)
	if len(tids) == 0 {
		return false
	}
	for _, tid := range tids {
		b, err := os.ReadFile(taskSyscallPath(pid, tid))
		if err != nil || !blockedOutsideAccept(b) {
			return false
		}
	}
	fds := socketFds(pid)
	if fds == nil {
		return false
	}
	for _, ino := range fds {
		if !listeners[ino] {
			return false
		}
	}
	return true
}

// blockedOutsideAccept reads a thread's /proc/.../syscall: true when it
// is blocked in a system call that is neither accept nor accept4 ("running"
// means on a CPU, or about to run).
func blockedOutsideAccept(b []byte) bool {
	f := bytes.Fields(b)
	if len(f) == 0 {
		return false
	}
	nr, err := strconv.Atoi(string(f[0]))
	return err == nil && nr >= 0 && nr != unix.SYS_ACCEPT && nr != unix.SYS_ACCEPT4
}
