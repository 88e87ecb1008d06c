package supervisor

import (
	"fmt"
	"maps"
	"slices"
	"sync"

	"golang.org/x/sys/unix"
)

// proc is what the supervisor knows of one server process. It is cached so
// that an accept costs no pidfd_open and no /proc read; the process's pidfd
// sits in the supervisor's epoll set and its exit drops the entry.
type proc struct {
	tgid  int
	pidfd int
	// pidfdMu guards the pidfd's lifetime: it is closed under the write
	// lock when the process is forgotten, so a copy taken under the read
	// lock never goes through a number reused for something else.
	pidfdMu     sync.RWMutex
	pidfdClosed bool

	mu sync.Mutex
	// group is the cgroup the supervisor last placed the process in; "" when
	// it never did (a fresh fork sits wherever its parent was).
	group string
	// served says the process was placed in a class (or found there) by
	// an accept since the last sweep (idle.go): one it made, whether or
	// not it got a connection, as the kernel's accepts are not followed.
	served bool
	// listeners caches, per fd, the listening socket that fd referred to when
	// last seen; kcmp tells whether it still does.
	listeners map[int]*listener
	// tids are the thread ids that map to this process, and forgotten says
	// the entry is gone and its pidfd closed (both under procTable.mu).
	tids      []int
	forgotten bool
	// track is the process's fd table as far as fork and full tracking
	// (and thread placement) follow it (under mu).
	track trackState
	// multi says the process was seen with more than one thread, and
	// threads are the ones the supervisor placed on their own (thread
	// placement; threads.go), by thread id (under mu).
	multi   bool
	threads map[int]*placedThread
}

// procTable maps the thread ids in notifications to processes.
type procTable struct {
	mu     sync.Mutex
	byTid  map[int]*proc
	byTgid map[int]*proc
}

func newProcTable() *procTable {
	return &procTable{byTid: map[int]*proc{}, byTgid: map[int]*proc{}}
}

// lookup returns the process of thread tid, which sent notification id.
// isNew reports a process seen for the first time, whose pidfd the caller
// must watch for exit.
func (t *procTable) lookup(notifyFd int, tid int, id uint64) (p *proc, isNew bool, err error) {
	t.mu.Lock()
	p = t.byTid[tid]
	t.mu.Unlock()
	if p != nil {
		return p, false, nil
	}
	// Most notifications come from a process's main thread, whose id is
	// the process id: pidfd_open accepts only those, so its success
	// answers the question without reading /proc, which is slow for a
	// process in the middle of a fork or an exec (and forking servers
	// bring a new process per connection).
	tgid, pidfd := tid, -1
	if fd, err := unix.PidfdOpen(tid, 0); err == nil {
		pidfd = fd
	} else if tgid, err = readTgid(tid); err != nil {
		return nil, false, err
	}
	t.mu.Lock()
	p = t.byTgid[tgid]
	t.mu.Unlock()
	if p != nil && pidfd >= 0 {
		unix.Close(pidfd)
	}
	if p == nil {
		if pidfd < 0 {
			fd, err := unix.PidfdOpen(tgid, 0)
			if err != nil {
				return nil, false, fmt.Errorf("opening pidfd of process %d: %w", tgid, err)
			}
			pidfd = fd
		}
		p = &proc{tgid: tgid, pidfd: pidfd, listeners: map[int]*listener{}}
		isNew = true
	}
	// Only now is it certain that tid is still the thread that asked, so
	// the pidfd opened above belongs to its process.
	if !idValid(notifyFd, id) {
		if isNew {
			unix.Close(p.pidfd)
		}
		return nil, false, unix.ENOENT
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if existing := t.byTgid[tgid]; existing != nil && isNew {
		// Another thread of the same process won the race.
		unix.Close(p.pidfd)
		p, isNew = existing, false
	}
	t.byTgid[tgid] = p
	t.byTid[tid] = p
	p.tids = append(p.tids, tid)
	return p, isNew, nil
}

// forgetThreads drops the thread ids of p that are not alive, so that
// the kernel may give them to another process. The main thread's id stays:
// it is the process's own and goes with it (forget).
func (t *procTable) forgetThreads(p *proc, alive map[int]bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	kept := p.tids[:0]
	for _, tid := range p.tids {
		if alive[tid] || tid == p.tgid {
			kept = append(kept, tid)
			continue
		}
		if t.byTid[tid] == p {
			delete(t.byTid, tid)
		}
	}
	p.tids = kept
}

// forget drops a process that exited (or whose pidfd turned out stale) and
// every thread id that pointed to it, and closes its pidfd once.
func (t *procTable) forget(p *proc) {
	t.mu.Lock()
	if p.forgotten {
		t.mu.Unlock()
		return
	}
	p.forgotten = true
	if t.byTgid[p.tgid] == p {
		delete(t.byTgid, p.tgid)
	}
	for _, tid := range p.tids {
		if t.byTid[tid] == p {
			delete(t.byTid, tid)
		}
	}
	t.mu.Unlock()
	p.closePidfd()
}

func (p *proc) closePidfd() {
	p.pidfdMu.Lock()
	defer p.pidfdMu.Unlock()
	if !p.pidfdClosed {
		p.pidfdClosed = true
		unix.Close(p.pidfd)
	}
}

// copyFd duplicates p's fd into the supervisor (pidfd_getfd).
func (p *proc) copyFd(fd int) (int, error) {
	p.pidfdMu.RLock()
	defer p.pidfdMu.RUnlock()
	if p.pidfdClosed {
		return -1, unix.ESRCH
	}
	return unix.PidfdGetfd(p.pidfd, fd, 0)
}

// all returns the processes known now, to work on without the table lock.
func (t *procTable) all() []*proc {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Collect(maps.Values(t.byTgid))
}

func (t *procTable) size() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.byTgid)
}

func (t *procTable) closeAll() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, p := range t.byTgid {
		p.closePidfd()
	}
	t.byTgid = map[int]*proc{}
	t.byTid = map[int]*proc{}
}
