package supervisor

import (
	"bytes"
	"os"
	"strconv"

	"github.com/vhqos/vhqos/cgroup"
	"github.com/vhqos/vhqos/intercept"
	"golang.org/x/sys/unix"
)

// Multi-threaded servers. Writing one thread's id to cgroup.procs moves
// every thread of its process, and in a threaded server (Apache worker and
// event, Python's ThreadingHTTPServer, Java pools) the other threads serve
// other vhosts' connections at the same moment. So a multi-threaded
// process is never moved into a class (placeLocked); under thread placement
// (intercept.PlaceThread) the thread that reads a connection is moved
// instead, while it serves it: the accepting thread is rarely the serving
// one (a listener thread hands connections to a pool), and a read is where
// the serving thread shows itself. The sweep sends a placed thread home
// when its connection is gone, or when it waits for work: blocked in futex
// or epoll_wait and no CPU used since the sweep before. A pool thread
// waiting for its next connection serves nobody (Apache's workers, Java
// and Ruby pools wait on a condition variable, a futex), and an event MPM
// worker hands a keep-alive connection back to its listener between
// requests. A thread that serves while blocked elsewhere (asleep, in poll
// or read on its connection or a database's) stays; one that waits on a
// lock or another thread's result for a whole sweep looks idle and goes
// home, until its next read of the connection.

// ThreadPlacer is what a Placer may also do: move one thread of a process,
// leaving its others where they are (cgroup.Manager.PlaceThread). Thread
// placement (intercept.PlaceThread) needs it.
type ThreadPlacer interface {
	PlaceThread(group string, tgid, tid int) error
}

// placedThread is what the supervisor knows of a thread it placed on its
// own (under p.mu of its process).
type placedThread struct {
	// group is where the supervisor last put the thread; "" for nowhere
	// yet: it sits where it was born or where its process was moved.
	group string
	// ino is the connection it read last, by socket inode.
	ino uint64
	// cpu is the thread's CPU time (utime+stime, in clock ticks) at the
	// last sweep, and seen says there was one since it was placed.
	cpu  uint64
	seen bool
}

// multiThreaded reports whether p has more than one thread, and remembers
// it when so: servers do not go back to one thread, and a move of such a
// process would scramble its threads. The count costs one stat of
// /proc/PID/task, whose link count is the threads plus two. Called with
// p.mu held.
func (s *Supervisor) multiThreaded(p *proc) bool {
	if p.multi {
		return true
	}
	if s.testOneThreaded {
		return false
	}
	var st unix.Stat_t
	if err := unix.Stat("/proc/"+strconv.Itoa(p.tgid)+"/task", &st); err != nil || st.Nlink <= 3 {
		return false
	}
	s.becameMultiThreaded(p, int(st.Nlink)-2)
	return true
}

// becameMultiThreaded records that p is multi-threaded (n threads, 0 when
// unknown) and says once, for the first such process, what that means
// under the placement in force. Called with p.mu held.
func (s *Supervisor) becameMultiThreaded(p *proc, n int) {
	p.multi = true
	s.stats.MultiThreadedProcesses.Add(1)
	if !s.multiNoted.CompareAndSwap(false, true) {
		return
	}
	if s.placement == intercept.PlaceThread {
		s.log.Info("the server is multi-threaded: the thread that reads a connection is placed in its vhost's cgroup while it serves it (under cgroup v2 only cpu and tasks_max limits reach a thread; memory and io stay per process)",
			"pid", p.tgid, "threads", n)
		return
	}
	s.log.Warn(`the server is multi-threaded: its processes are not moved into vhost cgroups (a move takes all their threads, which serve other vhosts too) and stay home, so their connections get DSCP and bandwidth limits but no cgroup limits (single-threaded helpers such as mod_cgid's daemon and the CGIs it forks are still placed); set placement = "thread" in [settings] to place the serving threads`,
		"pid", p.tgid, "threads", n)
}

// handleThreadRead answers a read under thread placement (when reads are
// not followed as full tracking does): the caller's thread is placed in
// the class of the connection it reads, then the read goes on.
func (s *Supervisor) handleThreadRead(n *notification) {
	defer func() { s.respond(n.ID, respondContinue(s.notifyFd, n.ID)) }()
	p, isNew, err := s.procs.lookup(s.notifyFd, int(n.Pid), n.ID)
	if err != nil {
		return
	}
	if isNew {
		s.events.watchExit(p)
	}
	fd := int(int32(n.Data.Args[0]))
	p.mu.Lock()
	defer p.mu.Unlock()
	// Every connection of a process under thread placement came through
	// an emulated accept, which recorded its fd (handOver): an fd not
	// recorded is a file, a pipe or a socket of the server's own, and
	// costs nothing more. A recorded one may be stale: close is not
	// intercepted here, and the number may now be a file's; placeReader
	// checks before it acts on it.
	ino, ok := p.track.fds[fd]
	if !ok {
		return
	}
	c := s.tracked.get(ino)
	if c == nil {
		delete(p.track.fds, fd)
		return
	}
	s.placeReader(p, int(n.Pid), fd, ino, s.tracked.decision(c).Group, false)
}

// stillHolds reports whether fd of p is still the socket ino, and
// forgets the record when it is not. Called with p.mu held.
func (s *Supervisor) stillHolds(p *proc, fd int, ino uint64) bool {
	if cur, ok := fdInode(p.tgid, fd); ok && cur == ino {
		return true
	}
	delete(p.track.fds, fd)
	return false
}

// placeReader puts the thread tid of p, which is about to read fd, the
// followed connection ino of class group, where it serves: p itself when
// it is single-threaded (or placement is by process, where placeLocked
// refuses a multi-threaded one), else the thread alone. Unless verified
// says the record of fd is known to be current, fd is checked to still be
// ino before anything moves or a thread's connection is taken to change
// (a readlink of /proc/PID/fd/N): reads that change nothing cost nothing.
// Called with p.mu held.
func (s *Supervisor) placeReader(p *proc, tid, fd int, ino uint64, group string, verified bool) {
	if s.threadPlacer == nil {
		s.placeLocked(p, group)
		return
	}
	if !p.multi {
		switch {
		case tid != p.tgid:
			// Only the main thread's id is the process's: it has
			// more than one, and the count is for the log line.
			if !s.multiThreaded(p) {
				s.becameMultiThreaded(p, 0)
			}
		case p.group == group:
			return
		case !s.multiThreaded(p):
			// One thread, just counted: placeLocked would count again.
			if verified || s.stillHolds(p, fd, ino) {
				s.moveProcess(p, group)
			}
			return
		}
	}
	if t := p.threads[tid]; t != nil && t.ino == ino && t.group == group {
		return
	}
	if !verified && !s.stillHolds(p, fd, ino) {
		return
	}
	if p.group != "" && p.group != cgroup.HomeGroup {
		// Placed whole while it had one thread: every thread it made
		// since was born in that class. Home first, then each thread
		// where it serves.
		s.moveProcess(p, cgroup.HomeGroup)
		for _, t := range p.threads {
			t.group = ""
		}
	}
	if p.threads == nil {
		p.threads = map[int]*placedThread{}
	}
	t := p.threads[tid]
	if t == nil {
		t = &placedThread{}
		p.threads[tid] = t
	}
	t.ino = ino
	if t.group == group {
		return
	}
	s.placeThread(p, tid, t, group)
}

// placeThread moves thread tid of p into group. A failure is logged and
// counted as place's are. Called with p.mu held.
func (s *Supervisor) placeThread(p *proc, tid int, t *placedThread, group string) {
	if s.debug {
		s.log.Debug("moving a server thread", "pid", p.tgid, "tid", tid, "from", t.group, "to", group)
	}
	if err := s.threadPlacer.PlaceThread(group, p.tgid, tid); err != nil {
		s.placementFailed(err, "moving a server thread into its cgroup", "pid", p.tgid, "tid", tid, "group", group)
		return
	}
	s.stats.ThreadPlacements.Add(1)
	t.group, t.seen = group, false
	// Under cgroup v2 the first thread placed takes its process into the
	// threaded subtree's home: the process is home from now on.
	p.group = cgroup.HomeGroup
}

// sweepThreads sends home the placed threads that serve nobody now: idle
// since the last sweep, or whose connection is gone; and forgets the
// threads that exited, so that a thread id the kernel gives to a new
// process later is not taken for theirs. Runs in the sweep.
func (s *Supervisor) sweepThreads() {
	for _, p := range s.procs.all() {
		p.mu.Lock()
		if p.multi {
			s.sweepThreadsOf(p)
		}
		p.mu.Unlock()
	}
}

// sweepThreadsOf is sweepThreads for one process. Called with p.mu held.
func (s *Supervisor) sweepThreadsOf(p *proc) {
	live := threads(p.tgid)
	if len(live) == 0 {
		return // gone: its exit drops it
	}
	alive := make(map[int]bool, len(live))
	for _, tid := range live {
		alive[tid] = true
	}
	s.procs.forgetThreads(p, alive)
	for tid, t := range p.threads {
		if !alive[tid] {
			delete(p.threads, tid)
			continue
		}
		if t.group == "" || t.group == cgroup.HomeGroup {
			continue
		}
		running, cpu, ok := threadCPU(p.tgid, tid)
		if !ok {
			delete(p.threads, tid)
			continue
		}
		idle := t.seen && !running && cpu == t.cpu && waitsForWork(p.tgid, tid)
		t.cpu, t.seen = cpu, true
		if idle || s.tracked.get(t.ino) == nil {
			s.placeThread(p, tid, t, cgroup.HomeGroup)
		}
	}
	// Connections closed without a close the filter sees leave their
	// fds recorded; drop those whose socket is gone.
	for fd, ino := range p.track.fds {
		if s.tracked.get(ino) == nil {
			delete(p.track.fds, fd)
		}
	}
}

// waitsForWork reports whether thread tid of process pid is blocked where
// an idle pool or event-loop thread waits: futex (a condition variable or
// semaphore), futex_waitv, or the epoll_wait family.
func waitsForWork(pid, tid int) bool {
	b, err := os.ReadFile(taskSyscallPath(pid, tid))
	if err != nil {
		return false
	}
	return waitSyscall(b)
}

// waitSyscall reads a thread's /proc/.../syscall for waitsForWork: its
// first field is the number of the system call it is blocked in, or
// "running" (proc(5)).
func waitSyscall(b []byte) bool {
	f := bytes.Fields(b)
	if len(f) == 0 {
		return false
	}
	switch nr, _ := strconv.Atoi(string(f[0])); nr {
	case unix.SYS_FUTEX, unix.SYS_FUTEX_WAITV, unix.SYS_EPOLL_WAIT, unix.SYS_EPOLL_PWAIT, unix.SYS_EPOLL_PWAIT2:
		return true
	}
	return false
}

// threadCPU reads thread tid of process pid from /proc: whether it is
// running (or runnable), and the CPU time it used, utime+stime in clock
// ticks (proc(5), /proc/PID/task/TID/stat fields 3, 14 and 15). ok is false
// when it is gone.
func threadCPU(pid, tid int) (running bool, cpu uint64, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/task/" + strconv.Itoa(tid) + "/stat")
	if err != nil {
		return false, 0, false
	}
	return parseTaskStat(b)
}

// parseTaskStat reads the state and utime+stime of a /proc stat line.
// The command name (field 2) is in parentheses and may hold spaces and
// parentheses itself: the fields are counted from its last ')'.
func parseTaskStat(b []byte) (running bool, cpu uint64, ok bool) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return false, 0, false
	}
	fields := bytes.Fields(b[i+1:])
	// fields[0] is field 3 (state); utime and stime are fields 14, 15.
	if len(fields) < 13 {
		return false, 0, false
	}
	utime, err1 := strconv.ParseUint(string(fields[11]), 10, 64)
	stime, err2 := strconv.ParseUint(string(fields[12]), 10, 64)
	if err1 != nil || err2 != nil {
		return false, 0, false
	}
	return string(fields[0]) == "R", utime + stime, true
}
