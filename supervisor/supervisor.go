package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// HomeGroup is the cgroup of server processes that serve no connection.
const HomeGroup = "home"

// Decision is what the QoS table says about one connection.
type Decision struct {
	// Group is the cgroup (vhost name or "default") the serving process
	// must be in.
	Group string
	// DSCP is the mark for the connection's packets, 0..63, or -1 to leave
	// the socket as the listener made it.
	DSCP int
}

// Classifier maps a connection's local address to its Decision. It is
// called once per connection and must not block.
type Classifier interface {
	ClassifyAddr(local netip.AddrPort) Decision
}

// Placer moves processes between the cgroups of the vhqos subtree.
type Placer interface {
	Place(group string, pid int) error
}

// Options configure a Supervisor.
type Options struct {
	// NotifyFd is the seccomp notification fd the shim handed over; the
	// Supervisor owns it from now on and closes it when Run returns.
	NotifyFd   int
	Classifier Classifier
	Placer     Placer
	Logger     *slog.Logger
	// ListenerIdle is how long a copy of a listening socket is kept after
	// its last use; 0 means 30 s. The copy keeps the socket open, so it must
	// not outlive the server's interest in it by much.
	ListenerIdle time.Duration
}

// Supervisor answers the notifications of one server and its descendants.
type Supervisor struct {
	notifyFd   int
	log        *slog.Logger
	placer     Placer
	classifier atomic.Pointer[Classifier]
	procs      *procTable
	listeners  *listenerTable
	events     *eventLoop
	idle       time.Duration
	kcmpWorks  bool
	selfPid    int
	stats      Stats
	groupStats sync.Map // group name -> *GroupStats

	// testHookBeforeDeliver, when set by a test, runs after a connection
	// was accepted and before it is handed over: the window a signal must
	// hit to exercise the requeue path deterministically.
	testHookBeforeDeliver func()
}

// New prepares a Supervisor; Run starts answering.
func New(opts Options) (*Supervisor, error) {
	if opts.Classifier == nil || opts.Placer == nil {
		return nil, errors.New("supervisor needs a classifier and a placer")
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	idle := opts.ListenerIdle
	if idle == 0 {
		idle = 30 * time.Second
	}
	events, err := newEventLoop()
	if err != nil {
		return nil, err
	}
	s := &Supervisor{
		notifyFd:  opts.NotifyFd,
		log:       log,
		placer:    opts.Placer,
		procs:     newProcTable(),
		listeners: newListenerTable(),
		events:    events,
		idle:      idle,
		selfPid:   unix.Getpid(),
	}
	s.kcmpWorks = kcmpAvailable()
	if !s.kcmpWorks {
		log.Warn("kcmp(2) is not available; every accept re-reads the listening socket (slower)")
	}
	s.SetClassifier(opts.Classifier)
	return s, nil
}

// SetClassifier replaces the table every later decision is taken from.
func (s *Supervisor) SetClassifier(c Classifier) { s.classifier.Store(&c) }

func (s *Supervisor) classify(local netip.AddrPort) Decision {
	return (*s.classifier.Load()).ClassifyAddr(local)
}

// Run answers notifications until every process under the filter has exited
// (the notification fd hangs up) or ctx is done. Connections accepted but
// not yet handed over are closed on return.
func (s *Supervisor) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.events.run(s)
	}()
	defer func() {
		s.events.stop()
		wg.Wait()
		s.listeners.closeAll()
		s.procs.closeAll()
		s.events.close()
		unix.Close(s.notifyFd)
	}()

	cancel, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		return fmt.Errorf("creating the cancel eventfd: %w", err)
	}
	defer unix.Close(cancel)
	stop := context.AfterFunc(ctx, func() {
		unix.Write(cancel, []byte{1, 0, 0, 0, 0, 0, 0, 0})
	})
	defer stop()

	fds := []unix.PollFd{{Fd: int32(s.notifyFd), Events: unix.POLLIN}, {Fd: int32(cancel), Events: unix.POLLIN}}
	var n notification
	for {
		fds[0].Revents, fds[1].Revents = 0, 0
		if _, err := unix.Poll(fds, -1); err != nil {
			if err == unix.EINTR {
				continue
			}
			return fmt.Errorf("waiting for seccomp notifications: %w", err)
		}
		if fds[1].Revents != 0 {
			return ctx.Err()
		}
		if fds[0].Revents&unix.POLLIN != 0 {
			if err := receive(s.notifyFd, &n); err != nil {
				// ENOENT: the caller died or was interrupted between
				// the wake-up and the read; nothing to answer.
				if err == unix.ENOENT || err == unix.EINTR {
					continue
				}
				return fmt.Errorf("receiving a seccomp notification: %w", err)
			}
			s.dispatch(&n)
			continue
		}
		if fds[0].Revents&(unix.POLLHUP|unix.POLLERR) != 0 {
			// Every process that had the filter is gone.
			return nil
		}
	}
}

func (s *Supervisor) dispatch(n *notification) {
	s.stats.Notifications.Add(1)
	switch n.Data.Nr {
	case unix.SYS_ACCEPT:
		s.handleAccept(n, false)
	case unix.SYS_ACCEPT4:
		s.handleAccept(n, true)
	default:
		s.respond(n.ID, respondContinue(s.notifyFd, n.ID))
	}
}

// respond logs a failed answer unless the caller simply went away.
func (s *Supervisor) respond(id uint64, err error) {
	if err != nil && !notificationGone(err) {
		s.stats.Errors.Add(1)
		s.log.Error("answering a seccomp notification", "id", id, "err", err)
	}
}

// place moves p into group unless the supervisor put it there already.
// A failure is logged and counted; the connection is served regardless,
// since losing a client is worse than serving it with the wrong limits.
func (s *Supervisor) place(p *proc, group string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.group == group {
		return
	}
	if err := s.placer.Place(group, p.tgid); err != nil {
		if errors.Is(err, unix.ESRCH) {
			return
		}
		s.stats.PlacementErrors.Add(1)
		s.log.Error("moving a server process into its cgroup", "pid", p.tgid, "group", group, "err", err)
		return
	}
	p.group = group
}

// forgetProc drops a process that exited from every table.
func (s *Supervisor) forgetProc(p *proc) {
	s.procs.mu.Lock()
	gone := p.forgotten
	s.procs.mu.Unlock()
	if gone {
		return
	}
	s.events.unwatchExit(p)
	s.procs.forget(p)
}

// Stats are counters of the supervisor's own work, for tests, status and
// metrics.
type Stats struct {
	Notifications   atomic.Uint64
	Accepted        atomic.Uint64 // connections handed to the server
	Requeued        atomic.Uint64 // connections kept for another accept because the first caller went away
	PlacementErrors atomic.Uint64
	Errors          atomic.Uint64
}

// GroupStats count connections per class.
type GroupStats struct {
	Connections atomic.Uint64
}

// Stats returns the supervisor's live counters.
func (s *Supervisor) Stats() *Stats { return &s.stats }

// GroupConnections returns how many connections were handed over per group.
func (s *Supervisor) GroupConnections() map[string]uint64 {
	out := map[string]uint64{}
	s.groupStats.Range(func(k, v any) bool {
		out[k.(string)] = v.(*GroupStats).Connections.Load()
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

// Tables reports the sizes of the supervisor's tables, so tests can check
// that nothing grows without bound.
func (s *Supervisor) Tables() (procs, listeners int) {
	return s.procs.size(), s.listeners.size()
}
