package supervisor

import (
	"maps"
	"sync"
	"sync/atomic"
)

// Counting connections per class.
//
// Where the supervisor accepts, it counts what it hands over. Where it
// leaves the accept to the kernel, it never sees the result: it counts
// the call when it answers "continue". A blocking accept (Apache prefork
// children waiting on one listener) is counted from the moment it starts
// waiting, before any client came; GroupConnections takes those still
// waiting off again, so that an idle server shows no connections.

// GroupStats count connections per class.
type GroupStats struct {
	Connections atomic.Uint64
	// reported is the most GroupConnections returned for the class, so
	// that the figure never goes down (it is a Prometheus counter) when a
	// thread is seen waiting before the supervisor counted its accept.
	reported atomic.Uint64
}

// GroupConnections returns, per group, how many connections were handed
// over: accepted by the supervisor, or accepts left to the kernel on a
// listener that decides the group, less those of them still waiting for a
// connection. An accept left to the kernel that a signal interrupts, or
// whose process exits while it waits, or a non-blocking one that finds the
// queue empty, stays counted. It reads /proc/PID/task/*/syscall of every
// known process: call it for status and metrics, not per connection.
func (s *Supervisor) GroupConnections() map[string]uint64 {
	waiting := s.waitingKernelAccepts()
	out := map[string]uint64{}
	for name, g := range s.groupStats.all() {
		n := g.Connections.Load()
		n -= min(n, waiting[name])
		for {
			r := g.reported.Load()
			if n <= r {
				n = r
				break
			}
			if g.reported.CompareAndSwap(r, n) {
				break
			}
		}
		out[name] = n
	}
	return out
}

func (s *Supervisor) countConnection(group string) {
	s.groupStats.get(group).Connections.Add(1)
}

// groupStatsTable maps group names to their counters. Groups are few and
// come with table changes, connections come all the time: a lookup is one
// atomic load and a map read, without a lock or an allocation (sync.Map
// would allocate for the string key), and a new group copies the map.
type groupStatsTable struct {
	mu      sync.Mutex // serialises writers
	current atomic.Pointer[map[string]*GroupStats]
}

func (t *groupStatsTable) get(group string) *GroupStats {
	if m := t.current.Load(); m != nil {
		if g := (*m)[group]; g != nil {
			return g
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	var next map[string]*GroupStats
	if m := t.current.Load(); m != nil {
		if g := (*m)[group]; g != nil {
			return g
		}
		next = maps.Clone(*m)
	} else {
		next = map[string]*GroupStats{}
	}
	g := &GroupStats{}
	next[group] = g
	t.current.Store(&next)
	return g
}

// all returns the counters of every group seen so far; the map must not
// be written.
func (t *groupStatsTable) all() map[string]*GroupStats {
	if m := t.current.Load(); m != nil {
		return *m
	}
	return nil
}

// waitingKernelAccepts counts, per group, the server's threads blocked in
// an accept on a listener whose accepts the kernel performs, less the
// blocking accepts the supervisor itself holds on that listener for that
// process (those were not counted).
func (s *Supervisor) waitingKernelAccepts() map[string]uint64 {
	out := map[string]uint64{}
	for _, p := range s.procs.all() {
		p.mu.Lock()
		held := maps.Clone(p.listeners)
		p.mu.Unlock()
		if len(held) == 0 {
			continue
		}
		blocked := map[int]int{} // listening fd -> threads in accept on it
		for _, tid := range threads(p.tgid) {
			if fd, ok := blockedAcceptFd(taskSyscallPath(p.tgid, tid)); ok && held[fd] != nil {
				blocked[fd]++
			}
		}
		for fd, n := range blocked {
			l := held[fd]
			l.mu.Lock()
			if l.continued && l.fixedOK {
				for _, w := range l.waiters {
					if w.proc == p && w.fd == fd {
						n--
					}
				}
				if n > 0 {
					out[l.fixed.Group] += uint64(n)
				}
			}
			l.mu.Unlock()
		}
	}
	return out
}
