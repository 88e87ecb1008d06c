package supervisor

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vhqos/vhqos/cgroup"
	"github.com/vhqos/vhqos/failopen"
	"github.com/vhqos/vhqos/intercept"
	"golang.org/x/sys/unix"
)

// Decision is what the QoS table says about one connection.
type Decision struct {
	// Group is the cgroup the serving process must be in:
	// cgroup.VHostGroup of the vhost, or cgroup.DefaultGroup.
	Group string
	// DSCP is the mark for the connection's packets, 0..63, or -1 to leave
	// the socket as the listener made it.
	DSCP int
	// Quota says the group's cgroup has a CPU quota (cpu_max): a process
	// placed there may wait for CPU for up to a quota period before it
	// runs, so the supervisor hands it its connection from a goroutine
	// of its own rather than waiting on the receiving thread.
	Quota bool
	// Admission, when set, caps the class's open connections and says
	// what a connection over a cap gets (admission.go); nil: no cap.
	Admission *Admission
	// Mark is the socket mark (SO_MARK) that puts the connection's
	// packets in its class's egress shaper (egress_rate, package shaper),
	// 0 for none.
	Mark uint32
	// Pacing caps the connection's sending rate (SO_MAX_PACING_RATE, in
	// bytes per second: connection_rate / 8), 0 for none.
	Pacing uint64
}

// Classifier maps a connection's local address (or, on a Unix-domain
// listener, the listener's path) to its Decision. It is called once per
// connection and must not block.
type Classifier interface {
	ClassifyAddr(local netip.AddrPort) Decision
	// ClassifyListener returns the Decision for every connection a
	// listener bound to bound can ever produce, when the table lets the
	// listener's address alone decide (a specific address, no name rules).
	ClassifyListener(bound netip.AddrPort) (Decision, bool)
	// NamesApply reports whether the host name a client sends (HTTP Host,
	// TLS SNI) may decide the class of a connection to local; only then
	// does the supervisor wait for the client's first bytes.
	NamesApply(local netip.AddrPort) bool
	// ClassifyName returns the Decision for a connection to local whose
	// client asked for host; a name no rule claims falls back to the
	// address.
	ClassifyName(host string, local netip.AddrPort) Decision
	// SniffLimits bound the wait for a client's first bytes: how long,
	// and how many bytes are looked at.
	SniffLimits() (timeout time.Duration, bytes int)
	// ProxyTrusted reports whether connections to local come from a
	// trusted proxy and start with a PROXY protocol header (HAProxy's
	// proxy-protocol.txt), whose destination address then takes the
	// place of local for every rule, and whose source is the client for
	// max_connections_per_ip. Elsewhere a PROXY header is only skipped to
	// find the host name. ClassifyListener must not decide a listener
	// whose connections may be trusted.
	ProxyTrusted(local netip.AddrPort) bool
	// ClassifyPath returns the Decision for a connection to the
	// Unix-domain listener bound to path ("/run/php/shop.sock", or "@name"
	// for an abstract socket): such a connection has no local address,
	// its listener's path stands for it.
	ClassifyPath(path string) Decision
	// ListenerDecidesPath is ClassifyListener for the Unix-domain listener
	// bound to path: the Decision for all its connections, when no host
	// name can apply to them.
	ListenerDecidesPath(path string) (Decision, bool)
	// NamesApplyPath is NamesApply for the connections of the Unix-domain
	// listener bound to path.
	NamesApplyPath(path string) bool
	// ClassifyNameOnPath is ClassifyName for a connection to the
	// Unix-domain listener bound to path whose client asked for host (a
	// FastCGI HTTP_HOST, an HTTP Host); a name no rule claims there falls
	// back to the path.
	ClassifyNameOnPath(host, path string) Decision
}

// classifierGen is one table with the generation it was installed as, so
// cached per-listener decisions know when they are stale.
type classifierGen struct {
	Classifier
	gen uint64
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
	// EmulateAlways turns off the listener shortcut: every accept is
	// emulated even where the listener's address alone decides the class.
	// Tracking connections through fork and exec needs each one seen.
	EmulateAlways bool
	// Observe, if set, is told how long answering each notification took,
	// by syscall name (for the metrics' latency histogram).
	Observe func(syscall string, d time.Duration)
	// Placement says whether the threads of a multi-threaded process are
	// placed one by one (intercept.PlaceThread: Placer must be a
	// ThreadPlacer, the filter must send the read family; every accept
	// is emulated) or not at all (intercept.PlaceProcess).
	Placement intercept.Placement
	// Track is how far connections are followed after accept; the shim's
	// filter must send the syscalls intercept.Syscalls lists. Fork and full
	// tracking emulate every accept, to know each connection's socket.
	Track intercept.Track
	// ListenerIdle is how long a copy of a listening socket is kept after
	// its last use; 0 means 5 s. The copy keeps the socket open, so it must
	// not outlive the server's interest in it by much.
	ListenerIdle time.Duration
	// InFlight, if set, is where every notification received and not yet
	// answered is recorded, in memory shared with the keeper, which
	// answers them "continue" if this supervisor dies (package failopen).
	InFlight *failopen.Table
}

// Supervisor answers the notifications of one server and its descendants.
type Supervisor struct {
	notifyFd   int
	log        *slog.Logger
	placer     Placer
	classifier atomic.Pointer[classifierGen]
	procs      *procTable
	listeners  *listenerTable
	bells      bellTable // doorbells out, on every listener (doorbell.go)
	events     *eventLoop
	idle       time.Duration
	kcmpWorks  bool
	shortcut   bool
	track      intercept.Track
	tracked    *trackTable
	// placement and threadPlacer: thread placement (threads.go), with
	// threadPlacer nil under process placement; multiNoted says the one
	// line about a multi-threaded server was logged.
	placement    intercept.Placement
	threadPlacer ThreadPlacer
	multiNoted   atomic.Bool
	debug        bool // the logger takes debug lines: log each placement
	observe      func(string, time.Duration)
	selfPid      int
	stats        Stats
	groupStats   groupStatsTable

	placementLog rateLimit
	// shapeLog bounds the warnings about shaping sockets (shape.go);
	// everShaped says some socket was given a shaping, so a class
	// without one may have to take it back.
	shapeLog   rateLimit
	everShaped atomic.Bool

	// handOvers are the connections being installed in processes that
	// may wait for CPU first (Decision.Quota); Run waits for them.
	handOvers sync.WaitGroup

	peekBufs     peekBuffers
	pendingCount atomic.Int64
	// heldReads counts the keep-alive reads held for their request
	// (heldread.go).
	heldReads atomic.Int64

	recv     receiverState
	inFlight *failopen.Table // nil when no keeper watches
	held     heldCount
	// admissions count the connections of classes with caps; refusing
	// counts the refusals under way (refuse.go).
	admissions *admissions
	refusing   atomic.Int64
	stale      func(id uint64) bool

	// testHookBeforeDeliver, when set by a test, runs after a connection
	// was accepted and before it is handed over: the window a signal must
	// hit to exercise the requeue path deterministically.
	testHookBeforeDeliver atomic.Pointer[func(callerPid int)]
	// testOneThreaded, set by tests before Run, makes multiThreaded
	// count threads no more: their server is this Go test binary, which
	// always has several threads but serves each command on one, and
	// most tests are about placing the process.
	testOneThreaded bool
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
		idle = 5 * time.Second
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
		shortcut:  !opts.EmulateAlways && opts.Track == intercept.TrackAccept && opts.Placement == intercept.PlaceProcess,
		track:     opts.Track,
		placement: opts.Placement,
		tracked:   newTrackTable(),
		observe:   opts.Observe,
		inFlight:  opts.InFlight,
	}
	if opts.Placement == intercept.PlaceThread {
		tp, ok := opts.Placer.(ThreadPlacer)
		if !ok {
			return nil, errors.New("thread placement needs a placer that moves threads")
		}
		s.threadPlacer = tp
	}
	s.stale = func(id uint64) bool { return !idValid(s.notifyFd, id) }
	s.admissions = newAdmissions(log, func(bound netip.AddrPort) (Decision, bool) {
		return s.classifier.Load().ClassifyListener(bound)
	})
	s.held.table = opts.InFlight
	if err := syncWakeUp(s.notifyFd); err != nil {
		log.Debug("synchronous wake-up of the supervisor is not available (Linux 6.6+)", "err", err)
	}
	s.debug = log.Enabled(context.Background(), slog.LevelDebug)
	s.kcmpWorks = kcmpAvailable()
	if !s.kcmpWorks {
		log.Warn("kcmp(2) is not available; every accept re-reads the listening socket (slower)")
	}
	s.SetClassifier(opts.Classifier)
	return s, nil
}

// SetClassifier replaces the table every later decision is taken from.
func (s *Supervisor) SetClassifier(c Classifier) {
	var gen uint64
	if old := s.classifier.Load(); old != nil {
		gen = old.gen + 1
	}
	s.classifier.Store(&classifierGen{Classifier: c, gen: gen})
}

// place moves p into group unless the supervisor put it there already.
// A failure is logged and counted; the connection is served regardless,
// since losing a client is worse than serving it with the wrong limits.
func (s *Supervisor) place(p *proc, group string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s.placeLocked(p, group)
}

// placeLocked is place with p.mu held. A multi-threaded process is never
// moved into a class (threads.go); one that was, while it had one thread,
// goes home instead.
func (s *Supervisor) placeLocked(p *proc, group string) {
	if group != cgroup.HomeGroup {
		p.served = true
	}
	if p.group == group {
		return
	}
	if group != cgroup.HomeGroup && s.multiThreaded(p) {
		if s.placement == intercept.PlaceProcess {
			s.stats.UnplacedMultiThreaded.Add(1)
		}
		if p.group == "" || p.group == cgroup.HomeGroup {
			return
		}
		group = cgroup.HomeGroup
	}
	s.moveProcess(p, group)
}

// moveProcess moves every thread of p into group. Called with p.mu held.
func (s *Supervisor) moveProcess(p *proc, group string) {
	if s.debug {
		s.log.Debug("moving a server process", "pid", p.tgid, "from", p.group, "to", group)
	}
	if err := s.placer.Place(group, p.tgid); err != nil {
		s.placementFailed(err, "moving a server process into its cgroup", "pid", p.tgid, "group", group)
		return
	}
	p.group = group
}

// placementFailed counts and logs a move that failed, unless the process
// or thread is simply gone (ESRCH). One line per failure would flood the
// log if, say, a cgroup vanished under load: the first, then a summary
// every 10 s.
func (s *Supervisor) placementFailed(err error, msg string, args ...any) {
	if errors.Is(err, unix.ESRCH) {
		return
	}
	n := s.stats.PlacementErrors.Add(1)
	if s.placementLog.Allow() {
		s.log.Error(msg, append(args, "err", err, "failures_so_far", n)...)
	}
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
	Continued       atomic.Uint64 // accepts left to the kernel on a listener whose address decides the class
	Requeued        atomic.Uint64 // connections kept for another accept because the first caller went away
	PlacementErrors atomic.Uint64
	Errors          atomic.Uint64
	NamesFound      atomic.Uint64 // connections classified by the host name the client sent
	NameFallbacks   atomic.Uint64 // ... by address because the first bytes named no host
	NameTimeouts    atomic.Uint64 // ... by address because no name came in time
	Reclassified    atomic.Uint64 // keep-alive connections moved by a later request for another vhost (full tracking)
	// MultiThreadedProcesses counts the server processes seen with more
	// than one thread; UnplacedMultiThreaded the connections such a
	// process took that placement = "process" left unplaced; and
	// ThreadPlacements the moves of single threads (placement = "thread").
	MultiThreadedProcesses atomic.Uint64
	UnplacedMultiThreaded  atomic.Uint64
	ThreadPlacements       atomic.Uint64
}

// Track returns how far connections are followed.
func (s *Supervisor) Track() intercept.Track { return s.track }

// Placement returns what moves into a connection's cgroup.
func (s *Supervisor) Placement() intercept.Placement { return s.placement }

// Stats returns the supervisor's live counters.
func (s *Supervisor) Stats() *Stats { return &s.stats }

// Tables reports the sizes of the supervisor's tables, so tests can check
// that nothing grows without bound.
func (s *Supervisor) Tables() (procs, listeners, connections int) {
	return s.procs.size(), s.listeners.size(), s.tracked.size()
}

// ForgetPlacements drops what the supervisor remembers of where it put each
// process, so the next connection of each is placed afresh: after a table
// change moved processes between cgroups behind its back.
func (s *Supervisor) ForgetPlacements() {
	list := s.procs.all()
	for _, p := range list {
		p.mu.Lock()
		p.group = ""
		p.mu.Unlock()
	}
}

// LiveConnections counts, per group, the established TCP connections the
// server's processes hold, classified by the current table (see
// decisionOf).
func (s *Supervisor) LiveConnections() map[string]int {
	out := map[string]int{}
	cl := s.classifier.Load()
	seen := map[uint64]bool{}
	for _, p := range s.procs.all() {
		for fd, ino := range socketFds(p.tgid) {
			if seen[ino] {
				continue
			}
			seen[ino] = true
			copyFd, err := p.copyFd(fd)
			if err != nil {
				continue
			}
			isListener, local, _, ok := socketKind(copyFd)
			unix.Close(copyFd)
			if ok && !isListener {
				out[s.decisionOf(ino, local, cl).Group]++
			}
		}
	}
	return out
}

// rateLimit lets one event through per interval (10 s).
type rateLimit struct {
	last atomic.Int64
}

func (r *rateLimit) Allow() bool {
	now := time.Now().UnixNano()
	last := r.last.Load()
	if last != 0 && now-last < int64(10*time.Second) {
		return false
	}
	return r.last.CompareAndSwap(last, now)
}
