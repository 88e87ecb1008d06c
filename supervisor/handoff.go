package supervisor

import (
	"time"

	"github.com/vhqos/vhqos/intercept"
	"golang.org/x/sys/unix"
)

// Handing over to a successor (vhqos upgrade): the old supervisor stops
// taking notifications, finishes the connections it holds, and gives the
// accepts it still holds to the new one, which answers them as if it had
// received them itself. The kernel does not care which holder of the
// notification fd answers a notification: any copy may.

// HeldAccept is an accept a supervisor received and has not answered,
// with what a successor needs to answer it (Adopt). Pid is the calling
// process (the kernel's notification names the thread; any thread's
// memory is the process's).
type HeldAccept struct {
	ID   uint64    `json:"id"`
	Pid  uint32    `json:"pid"`
	Args [4]uint64 `json:"args"` // fd, sockaddr buffer, socklen_t, accept4 flags
}

// Handoff is what a supervisor passes to its successor: the accepts it
// holds, and its counters so that they carry on.
type Handoff struct {
	Accepts     []HeldAccept      `json:"accepts"`
	Stats       map[string]uint64 `json:"stats"`
	Connections map[string]uint64 `json:"connections"` // by group
	// Lost counts connections it had accepted and could not hand over
	// before it stopped: closed, the client sees them reset.
	Lost int64 `json:"lost"`
	// Admissions is its record of the connections counted against caps.
	Admissions AdmissionRecord `json:"admissions"`
}

// Drain stops this supervisor taking notifications (the successor takes
// them from now on), waits up to wait for the connections it holds to be
// handed over (a client's first bytes arriving, an accept waiting for
// one), and returns what its successor takes over. Call Run's cancel
// after it; the accepts returned are no longer this supervisor's.
func (s *Supervisor) Drain(wait time.Duration) Handoff {
	s.recv.draining.Store(true)
	deadline := time.Now().Add(wait)
	// Held covers a connection a receiver took from the kernel's queue
	// and is handing over as Drain starts, which is neither pending nor
	// stashed; refusals under way are no one's to hand over.
	for time.Now().Before(deadline) && (s.pendingCount.Load() > 0 || s.stashed() > 0 || s.held.n()-int64(s.refusing.Load()) > 0) {
		time.Sleep(time.Millisecond)
	}
	// The receiver may be answering one last notification: what it parks
	// must be collected too.
	for time.Now().Before(deadline) && !s.recv.inRecv.Load() {
		time.Sleep(time.Millisecond)
	}
	// Held keep-alive reads go on in their processes' present classes:
	// a successor would need the connections' tables to hold them.
	s.answerHeldReads()
	var h Handoff
	for _, l := range s.listeners.all() {
		l.mu.Lock()
		for _, w := range l.waiters {
			h.Accepts = append(h.Accepts, HeldAccept{ID: w.id, Pid: uint32(w.proc.tgid),
				Args: [4]uint64{uint64(w.fd), w.addr, w.addrlen, uint64(w.flags)}})
		}
		l.waiters = nil
		l.mu.Unlock()
	}
	s.recv.mu.Lock()
	h.Accepts = append(h.Accepts, s.recv.late...)
	s.recv.late = nil
	s.recv.drained = true
	s.recv.mu.Unlock()
	if s.inFlight != nil {
		for _, a := range h.Accepts {
			s.inFlight.Answered(a.ID)
		}
	}
	st := &s.stats
	h.Stats = map[string]uint64{
		"notifications": st.Notifications.Load(), "accepted": st.Accepted.Load(), "continued": st.Continued.Load(),
		"requeued": st.Requeued.Load(), "placement_errors": st.PlacementErrors.Load(), "errors": st.Errors.Load(),
		"names_found": st.NamesFound.Load(), "name_fallbacks": st.NameFallbacks.Load(), "name_timeouts": st.NameTimeouts.Load(),
		"reclassified": st.Reclassified.Load(),
	}
	h.Connections = map[string]uint64{}
	for name, g := range s.groupStats.all() {
		h.Connections[name] = g.Connections.Load()
	}
	h.Lost = s.held.n()
	h.Admissions = s.admissions.snapshot()
	return h
}

// stashed counts the connections ready to hand over that wait for an
// accept.
func (s *Supervisor) stashed() int {
	n := 0
	for _, l := range s.listeners.all() {
		l.mu.Lock()
		n += len(l.stash)
		l.mu.Unlock()
	}
	return n
}

// Adopt takes over what a predecessor handed off: its counters, and the
// accepts it held, answered as if just received (those whose caller has
// gone meanwhile are skipped). Call it once Run is under way.
func (s *Supervisor) Adopt(h Handoff) {
	st := &s.stats
	for name, p := range map[string]interface{ Add(uint64) uint64 }{
		"notifications": &st.Notifications, "accepted": &st.Accepted, "continued": &st.Continued,
		"requeued": &st.Requeued, "placement_errors": &st.PlacementErrors, "errors": &st.Errors,
		"names_found": &st.NamesFound, "name_fallbacks": &st.NameFallbacks, "name_timeouts": &st.NameTimeouts,
		"reclassified": &st.Reclassified,
	} {
		p.Add(h.Stats[name])
	}
	for group, n := range h.Connections {
		s.groupStats.get(group).Connections.Add(n)
	}
	s.admissions.adopt(h.Admissions)
	if len(h.Accepts) == 0 {
		return
	}
	s.handOvers.Add(1)
	go func() {
		defer s.handOvers.Done()
		// Answering hands connections over: a quiet thread (sendFd).
		restore, err := quietThread()
		if err != nil {
			s.log.Warn("taking over held accepts on a thread that takes signals", "err", err)
		}
		defer restore()
		for _, a := range h.Accepts {
			if !idValid(s.notifyFd, a.ID) {
				continue
			}
			if s.inFlight != nil {
				s.inFlight.Received(a.ID, s.stale)
			}
			n := notification{ID: a.ID, Pid: a.Pid}
			n.Data.Nr = int32(unix.SYS_ACCEPT4)
			copy(n.Data.Args[:4], a.Args[:])
			s.dispatch(&n, time.Now())
		}
	}()
}

// adoptable reports whether nr is a syscall Drain can hand over.
func adoptable(nr int32) bool {
	sc, ok := intercept.ByNr(nr)
	return ok && (sc.Step == intercept.StepAccept || sc.Step == intercept.StepAccept4)
}
