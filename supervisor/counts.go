package supervisor

import (
	"maps"
	"os"
	"strconv"
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
	s.groupStats.Range(func(k, v any) bool {
		g := v.(*GroupStats)
		n := g.Connections.Load()
		n -= min(n, waiting[k.(string)])
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
		out[k.(string)] = n
		return true
	})
	return out
}

func (s *Supervisor) countConnection(group string) {
	v, ok := s.groupStats.Load(group)
	if !ok {
		v, _ = s.groupStats.LoadOrStore(group, &GroupStats{})
	}
	v.(*GroupStats).Connections.Add(1)
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
		dir := "/proc/" + strconv.Itoa(p.tgid) + "/task"
		f, err := os.Open(dir)
		if err != nil {
			continue
		}
		tids, _ := f.Readdirnames(-1)
		f.Close()
		blocked := map[int]int{} // listening fd -> threads in accept on it
		for _, tid := range tids {
			if fd, ok := blockedAcceptFd(dir + "/" + tid + "/syscall"); ok && held[fd] != nil {
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
