package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vhqos/vhqos/cgroup"
	"github.com/vhqos/vhqos/failopen"
	"github.com/vhqos/vhqos/shim"
	"github.com/vhqos/vhqos/status"
	"github.com/vhqos/vhqos/supervisor"
	"golang.org/x/sys/unix"
)

// The keeper: the main process of `vhqos run`, the one a shell or systemd
// sees. It holds what must not be lost when the supervisor dies (the
// notification fd, the server as its child, the cgroup subtree, the status
// and metrics sockets) and runs the supervisor as a child process it can
// replace (supervise.go). It parses no table, classifies nothing and sniffs
// nothing: what it needs of the table, a `vhqos supervise --settings`
// child reads for it.

// keeper is the state of one vhqos run.
type keeper struct {
	log     *slog.Logger
	opts    runOptions
	self    string // this binary, as the kernel knows it
	started time.Time

	notifyFd int
	// The notification fd as a file for exec.Cmd.ExtraFiles, made once:
	// an os.File closes its fd when it is collected.
	notifyFile      *os.File
	statusListener  *os.File
	metricsListener *os.File
	serverPid       int
	cgroupParent    string
	cgroupName      string
	track           string
	placement       string
	// shapeDevices are the devices claimed for egress_rate (bandwidth.go).
	shapeDevices []string

	// What happened so far, told to each new supervisor.
	mu           sync.Mutex
	restarts     uint64
	upgrades     uint64
	failedOpen   time.Duration // up to failingSince
	failingSince time.Time     // zero while a supervisor answers
	// table is the QoS table last put in force, as its supervisor read
	// it (bytes the keeper does not parse): a supervisor started after a
	// crash runs with it when the file has been broken meanwhile.
	table                   []byte
	failedOpenNotifications uint64
	lostConnections         uint64
}

// supervisorProc is one supervisor process and its control socket.
type supervisorProc struct {
	// inFlight is its table of notifications in flight (each supervisor
	// has its own: two run at once during an upgrade).
	inFlight     *failopen.Table
	inFlightFile *os.File
	region       []byte
	cmd          *exec.Cmd
	ctrl         *os.File
	said         *bufio.Reader // what it writes on ctrl (listen)
	handoff      chan string   // its hand-off, once drained
	exited       chan struct{} // closed once cmd.Wait returned
}

// Back-off between supervisor starts after crashes: doubling from
// restartFirst to restartMost; a crash restartReset after the one before
// resets it.
const (
	restartFirst = 50 * time.Millisecond
	restartMost  = 5 * time.Second
	restartReset = 30 * time.Second
)

// readSettings runs `vhqos supervise --settings` for what the keeper needs
// of the table before the server starts; the child prints the table's
// errors itself.
func readSettings(self string, opts runOptions) (tableSettings, error) {
	var s tableSettings
	cmd := exec.Command(self, "supervise", "--settings", "--config", opts.config, "--log-level", opts.logLevel, "--log-format", opts.logFormat)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return s, errRefusedTable
	}
	if err := json.Unmarshal(out, &s); err != nil {
		return s, fmt.Errorf("reading the table's settings from %s supervise: %w", self, err)
	}
	return s, nil
}

// errRefusedTable says the table was refused; the reasons are printed.
var errRefusedTable = errors.New("refusing to start with this QoS table")

// keep runs the server under supervision and returns its exit status.
func keep(log *slog.Logger, opts runOptions) (int, error) {
	if os.Geteuid() != 0 {
		log.Warn("not running as root: no_new_privs is set, so setuid programs the server runs (suexec) gain no privileges")
	}
	self, err := os.Executable()
	if err != nil {
		return 0, fmt.Errorf("finding the vhqos binary: %w", err)
	}
	// The fds inherited for the server reach it through the shim, which
	// passes them explicitly; no other child of the keeper may hold them
	// (a listening socket held by a supervisor would outlive the server).
	for _, fd := range opts.inherited {
		unix.CloseOnExec(fd)
	}
	settings, err := readSettings(self, opts)
	if err != nil {
		return 2, err
	}
	// Signals are caught from the start so that none is lost between the
	// server's start and the forwarding loop.
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, forwarded...)
	defer signal.Stop(sigs)
	upgradeOrders := make(chan os.Signal, 1)
	signal.Notify(upgradeOrders, upgradeSignal)
	defer signal.Stop(upgradeOrders)

	k := &keeper{log: log, opts: opts, self: self, started: time.Now(), cgroupParent: settings.CgroupParent,
		cgroupName: "vhqos." + strconv.Itoa(os.Getpid()), track: settings.Track, placement: settings.Placement, shapeDevices: settings.ShapeDevices}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Refused before anything starts: two vhqos on one socket would answer
	// for each other.
	statusListener, err := status.Listen(opts.statusPath)
	if err != nil {
		return 0, err
	}
	defer func() {
		statusListener.Close()
		os.Remove(opts.statusPath)
	}()
	if k.statusListener, err = statusListener.(*net.UnixListener).File(); err != nil {
		return 0, fmt.Errorf("passing the status socket on: %w", err)
	}
	if opts.metricsAddr != "" {
		metricsListener, err := status.ListenMetrics(opts.metricsAddr)
		if err != nil {
			return 0, err
		}
		defer metricsListener.Close()
		if k.metricsListener, err = metricsListener.(*net.TCPListener).File(); err != nil {
			return 0, fmt.Errorf("passing the metrics listener on: %w", err)
		}
	}

	// Before the server starts, and once the status socket says no other
	// vhqos answers there (its qdisc would be taken for a stale one and
	// given back): a device with someone else's qdisc stops vhqos here.
	// Given back last, after the server's processes are gone.
	if err := claimDevices(log, k.shapeDevices); err != nil {
		return 0, err
	}
	defer releaseDevices(log, k.shapeDevices)
	if removed, err := cgroup.RemoveStale(ctx, settings.CgroupParent, log); err != nil {
		log.Warn("removing cgroups left by a vhqos that is gone", "err", err)
	} else if len(removed) > 0 {
		log.Info("removed cgroups left by a vhqos that is gone", "cgroups", removed)
	}
	cg, err := cgroup.New(ctx, cgroup.Options{Parent: settings.CgroupParent, Name: k.cgroupName, Logger: log})
	if err != nil {
		if os.Geteuid() != 0 && errors.Is(err, fs.ErrPermission) {
			return 0, fmt.Errorf("not root and not allowed to create cgroups (%v): run vhqos as root, or give it a delegated cgroup (systemd-run --scope -p Delegate=yes) and set settings.cgroup_parent", err)
		}
		return 0, err
	}
	// Whatever happens from here on, nothing is left behind: closing the
	// cgroups kills every process still in them.
	var cleaned sync.Once
	cleanup := func() {
		cleaned.Do(func() {
			closeCtx, done := context.WithTimeout(context.Background(), 10*time.Second)
			defer done()
			if err := cg.Close(closeCtx); err != nil {
				log.Error("removing vhqos cgroups", "err", err)
			}
		})
	}
	defer cleanup()
	if err := k.startReaper(); err != nil {
		log.Warn("no reaper: if vhqos run is killed outright, the server's processes outlive it", "err", err)
	}

	if len(opts.inherited) > 0 {
		log.Info("passing inherited file descriptors to the server at the same numbers", "fds", opts.inherited)
	}
	activated, problem := socketActivation(os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDS"), os.Getpid(), opts.inherited)
	if activated {
		log.Info("socket activation: LISTEN_PID will name the server", "LISTEN_FDS", os.Getenv("LISTEN_FDS"), "LISTEN_FDNAMES", os.Getenv("LISTEN_FDNAMES"))
	}
	if problem != "" {
		log.Warn("socket activation: the server will not find the sockets it is promised", "problem", problem)
	}
	// sd_notify(3) from the server reaches systemd through the keeper
	// (notify.go), which stays the unit's main process.
	env, notify, err := notifyFrom(log, os.Environ())
	if err != nil {
		return 0, err
	}
	defer notify.Close()
	proc, err := shim.Start(ctx, shim.Config{
		Argv:      opts.argv,
		Syscalls:  settings.Syscalls,
		Env:       env,
		Stdin:     os.Stdin,
		Stdout:    os.Stdout,
		Stderr:    os.Stderr,
		Inherit:   opts.inherited,
		ListenPID: activated,
	})
	if err != nil {
		return 0, err
	}
	k.notifyFd, k.serverPid = proc.NotifyFd, proc.Pid()
	k.notifyFile = os.NewFile(uintptr(k.notifyFd), "notify")
	killServer := func() {
		unix.Kill(proc.Pid(), unix.SIGKILL)
		proc.Cmd.Wait()
	}
	if err := cg.Place(cgroup.HomeGroup, proc.Pid()); err != nil {
		killServer()
		return 0, fmt.Errorf("placing the server in its cgroup: %w", err)
	}
	// The server runs once a supervisor answers for it.
	sup, err := k.startSupervisor()
	if err != nil {
		killServer()
		return 0, err
	}
	if err := sup.goAhead(); err != nil {
		killServer()
		return 0, err
	}
	if err := proc.Exec(); err != nil {
		proc.Cmd.Wait()
		k.stopSupervisor(sup)
		return 0, fmt.Errorf("starting %s: %w", opts.argv[0], err)
	}
	log.Info("server started", "pid", proc.Pid(), "command", opts.argv, "config", opts.config,
		"cgroup_version", cg.Version(), "track", settings.Track, "placement", settings.Placement, "supervisor_pid", sup.cmd.Process.Pid)

	exited := make(chan struct{})
	go func() {
		proc.Cmd.Wait()
		close(exited)
	}()
	var killTimer <-chan time.Time
	var lastCrash time.Time
	backOff := restartFirst
	// While no supervisor answers: the keeper does, "continue".
	var failingOpen context.CancelFunc
	var failedSince time.Time
	restarted := make(chan *supervisorProc, 1)
	restartFailed := make(chan error, 1)
	// restartLater starts a supervisor after the back-off, reporting on
	// restarted or restartFailed.
	restartLater := func() {
		wait := backOff
		backOff = min(2*backOff, restartMost)
		go func() {
			time.Sleep(wait)
			next, err := k.startSupervisor()
			if err != nil {
				restartFailed <- err
				return
			}
			restarted <- next
		}()
	}
	// vhqos upgrade: a new supervisor from the binary on disk; the one it
	// replaces (retiring) drains and hands off through the keeper.
	var upgrading bool
	var retiring *supervisorProc
	upgradeReady := make(chan *supervisorProc, 1)
	upgradeFailed := make(chan error, 1)
	handoffs := make(chan string, 1)
	// The watchdog: a supervisor that leaves notifications waiting
	// without receiving any (stopped, deadlocked) is killed, and the
	// crash path takes over.
	watchdog := time.NewTicker(hungCheck)
	defer watchdog.Stop()
	var stuckSince time.Time
	var lastSeen uint64
	for {
		var supExited, retired chan struct{}
		if sup != nil {
			supExited = sup.exited
		}
		if retiring != nil {
			retired = retiring.exited
		}
		select {
		case <-watchdog.C:
			if sup == nil || upgrading {
				stuckSince = time.Time{}
				continue
			}
			last := sup.inFlight.Last()
			if last != lastSeen || !supervisor.NotificationsWaiting(k.notifyFd) {
				stuckSince, lastSeen = time.Time{}, last
				continue
			}
			if stuckSince.IsZero() {
				stuckSince = time.Now()
				continue
			}
			if time.Since(stuckSince) >= hungAfter {
				log.Error("the supervisor has not taken a notification for a while; killing it", "supervisor_pid", sup.cmd.Process.Pid, "for", time.Since(stuckSince).Round(time.Millisecond))
				sup.cmd.Process.Kill()
				stuckSince = time.Time{}
			}
			continue
		case <-upgradeOrders:
			if sup == nil || upgrading || retiring != nil {
				log.Warn("not upgrading now: a supervisor is starting or handing over; try again in a moment")
				continue
			}
			upgrading = true
			k.mu.Lock()
			k.upgrades++
			k.mu.Unlock()
			log.Info("upgrading the supervisor", "binary", k.self)
			go func() {
				next, err := k.startSupervisor()
				if err != nil {
					upgradeFailed <- err
					return
				}
				upgradeReady <- next
			}()
			continue
		case err := <-upgradeFailed:
			upgrading = false
			k.mu.Lock()
			k.upgrades--
			k.mu.Unlock()
			log.Error("upgrade failed; the running supervisor carries on", "err", err)
			continue
		case next := <-upgradeReady:
			upgrading = false
			if sup == nil {
				// The old one died meanwhile: this one simply takes over.
				next.cmd.Process.Kill()
				continue
			}
			retiring, sup = sup, next
			if err := sup.goAhead(); err != nil {
				log.Error("the new supervisor did not take over", "err", err)
			}
			go func(old *supervisorProc) {
				if msg, ok := <-old.handoff; ok {
					handoffs <- msg
				}
			}(retiring)
			if _, err := retiring.ctrl.WriteString("drain\n"); err != nil {
				log.Error("telling the old supervisor to hand over", "err", err)
			}
			continue
		case msg := <-handoffs:
			if sup != nil {
				if _, err := sup.ctrl.WriteString("adopt " + msg); err != nil {
					log.Error("passing the old supervisor's hand-off on", "err", err)
				}
			}
			continue
		case <-retired:
			// What it received after it drained, the keeper lets through.
			answered, _ := failopen.AnswerLeftovers(k.notifyFd, retiring.inFlight, false)
			retiring.release()
			k.mu.Lock()
			k.failedOpenNotifications += uint64(answered)
			k.mu.Unlock()
			log.Info("supervisor upgraded", "old_pid", retiring.cmd.Process.Pid, "supervisor_pid", sup.cmd.Process.Pid, "answered_continue", answered)
			retiring = nil
			continue
		case sig := <-sigs:
			log.Info("forwarding signal to the server", "signal", sig)
			unix.Kill(proc.Pid(), sig.(syscall.Signal))
			switch sig {
			case unix.SIGHUP:
				// `systemctl reload` reloads both the server and the table.
				if sup != nil {
					sup.cmd.Process.Signal(unix.SIGHUP)
				}
			case unix.SIGTERM, unix.SIGINT, unix.SIGQUIT:
				if killTimer == nil {
					killTimer = time.After(opts.stopTimeout)
				}
			}
			continue
		case <-killTimer:
			log.Warn("server did not stop in time; killing it", "timeout", opts.stopTimeout)
			unix.Kill(-proc.Pid(), unix.SIGKILL)
			unix.Kill(proc.Pid(), unix.SIGKILL)
			continue
		case <-supExited:
			state := sup.cmd.ProcessState
			if state.Success() {
				// It returns 0 only when no process is left under the
				// filter: the server is gone, or going.
				<-exited
				sup.release()
				sup = nil
				break
			}
			answered, held := failopen.AnswerLeftovers(k.notifyFd, sup.inFlight, true)
			sup.release()
			sup = nil
			k.mu.Lock()
			k.restarts++
			k.failedOpenNotifications += uint64(answered)
			if held > 0 {
				k.lostConnections += uint64(held)
			}
			k.mu.Unlock()
			log.Error("supervisor died; the server is served without QoS until a new one takes over",
				"status", state.String(), "answered_continue", answered, "connections_lost", held)
			failedSince = time.Now()
			k.mu.Lock()
			k.failingSince = failedSince
			k.mu.Unlock()
			var failCtx context.Context
			failCtx, failingOpen = context.WithCancel(ctx)
			go failopen.Serve(failCtx, k.notifyFd, 20*time.Millisecond, func() {
				k.mu.Lock()
				k.failedOpenNotifications++
				k.mu.Unlock()
			})
			if time.Since(lastCrash) > restartReset {
				backOff = restartFirst
			}
			lastCrash = time.Now()
			restartLater()
			continue
		case err := <-restartFailed:
			log.Error("cannot start a new supervisor; trying again", "err", err, "in", backOff)
			restartLater()
			continue
		case next := <-restarted:
			// Two receivers for a moment are harmless (each notification
			// reaches one); no receiver at all is not.
			failingOpen()
			k.mu.Lock()
			k.failedOpen += time.Since(failedSince)
			k.failingSince = time.Time{}
			k.mu.Unlock()
			if err := next.goAhead(); err != nil {
				log.Error("the new supervisor did not take over", "err", err)
				next.cmd.Process.Kill()
			}
			// failopen.Serve may still answer the notification it is
			// receiving; it returns on its own.
			sup = next
			log.Info("supervisor restarted", "supervisor_pid", sup.cmd.Process.Pid, "failed_open", time.Since(failedSince).Round(time.Millisecond))
			continue
		case <-exited:
		}
		break
	}
	code := exitStatus(proc.Cmd.ProcessState)
	log.Info("server exited", "status", code)
	// The server's remaining processes (children it left behind) die with
	// the cgroups; then the filter has no users and the supervisor returns.
	cleanup()
	if failingOpen != nil {
		failingOpen()
	}
	if sup != nil {
		k.stopSupervisor(sup)
	}
	if retiring != nil {
		k.stopSupervisor(retiring)
	}
	return code, nil
}

// startReaper starts the reaper (reap.go), which outlives a killed keeper
// to kill the server's leftovers. It runs beside the keeper, outside the
// cgroups it watches.
func (k *keeper) startReaper() error {
	raw, _ := json.Marshal(keeperState{KeeperPID: os.Getpid(), CgroupParent: k.cgroupParent, CgroupName: k.cgroupName, ShapeDevices: k.shapeDevices})
	cmd := exec.Command(k.self, "reap", "--log-level", k.opts.logLevel, "--log-format", k.opts.logFormat, "--keeper-state", string(raw))
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting the reaper: %w", err)
	}
	// Reaped when it exits, after the keeper's cleanup or never.
	go cmd.Wait()
	return nil
}

// startSupervisor starts a supervisor process and waits until it is ready
// to receive (it has read the table, attached to the cgroups and made its
// tables); goAhead then lets it.
func (k *keeper) startSupervisor() (*supervisorProc, error) {
	k.mu.Lock()
	state := keeperState{
		KeeperPID: os.Getpid(), KeeperVersion: version, KeeperStarted: k.started,
		ServerPID: k.serverPid, CgroupParent: k.cgroupParent, CgroupName: k.cgroupName, Track: k.track, Placement: k.placement,
		Metrics: k.metricsListener != nil, Restarts: k.restarts, Upgrades: k.upgrades, FailedOpen: k.failedOpen + sinceOrZero(k.failingSince),
		FailedOpenNotifications: k.failedOpenNotifications, LostConnections: k.lostConnections,
		Table: len(k.table) > 0, ShapeDevices: k.shapeDevices,
	}
	lastTable := k.table
	k.mu.Unlock()
	raw, _ := json.Marshal(state)
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("making the supervisor's control socket: %w", err)
	}
	ours, theirs := os.NewFile(uintptr(pair[0]), "control"), os.NewFile(uintptr(pair[1]), "control")
	cmd := exec.Command(k.self, "supervise", "--config", k.opts.config, "--log-level", k.opts.logLevel,
		"--log-format", k.opts.logFormat, "--keeper-state", string(raw))
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	memfd, region, err := failopen.Create()
	if err != nil {
		ours.Close()
		return nil, err
	}
	table, err := failopen.Attach(region)
	if err != nil {
		ours.Close()
		return nil, err
	}
	inFlightFile := os.NewFile(uintptr(memfd), "in-flight")
	metrics := k.metricsListener
	if metrics == nil {
		metrics = k.notifyFile // a placeholder, unread
	}
	cmd.ExtraFiles = []*os.File{theirs, k.notifyFile, inFlightFile, k.statusListener, metrics}
	if len(lastTable) > 0 {
		tableFile, err := tableMemfd(lastTable)
		if err != nil {
			k.log.Warn("cannot pass the table in force to the new supervisor; it reads the file", "err", err)
		} else {
			defer tableFile.Close()
			cmd.ExtraFiles = append(cmd.ExtraFiles, tableFile)
		}
	}
	// Its own process group: a terminal's Ctrl-C is the keeper's to
	// forward. It dies with the keeper; the reaper (reap.go) kills what
	// the server leaves.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	p := &supervisorProc{cmd: cmd, ctrl: ours, said: bufio.NewReader(ours), handoff: make(chan string, 1), exited: make(chan struct{}),
		inFlight: table, inFlightFile: inFlightFile, region: region}
	err = cmd.Start()
	// Only the child holds its end now: when it dies, the keeper reads
	// EOF at once.
	theirs.Close()
	if err != nil {
		p.release()
		return nil, fmt.Errorf("starting the supervisor: %w", err)
	}
	go func() {
		cmd.Wait()
		close(p.exited)
	}()
	ready := make(chan error, 1)
	go k.listen(p, ready)
	select {
	case err := <-ready:
		if err == nil {
			return p, nil
		}
		// It exits by itself once it has closed its end, having said why
		// or logged it; a kill now would only race its last words.
		select {
		case <-p.exited:
		case <-time.After(supervisorExitWait):
			cmd.Process.Kill()
			<-p.exited
		}
		failopen.AnswerLeftovers(k.notifyFd, p.inFlight, true)
		p.release()
		var own supervisorError
		if errors.As(err, &own) {
			return nil, fmt.Errorf("the supervisor could not start: %w", err)
		}
		return nil, fmt.Errorf("the supervisor did not get ready (%s): %w", cmd.ProcessState, err)
	case <-time.After(supervisorReadyTimeout):
		cmd.Process.Kill()
		<-p.exited
		failopen.AnswerLeftovers(k.notifyFd, p.inFlight, true)
		p.release()
		return nil, fmt.Errorf("the supervisor was not ready within %v", supervisorReadyTimeout)
	}
}

// supervisorError is the error that kept a supervisor from starting, as
// it said it ("error" on its control socket).
type supervisorError string

func (e supervisorError) Error() string { return string(e) }

// listen reads what supervisor p says on its control socket until it
// closes: "ready" once (to ready), or instead "error QUOTED" with the
// error that stops it (to ready, as a supervisorError); "table BASE64"
// for each table it put in force, "handoff JSON" when it drained (to
// p.handoff).
func (k *keeper) listen(p *supervisorProc, ready chan<- error) {
	readyOnce := false
	for {
		line, err := p.said.ReadString('\n')
		if err != nil {
			if !readyOnce {
				ready <- fmt.Errorf("it exited (%w)", err)
			}
			close(p.handoff)
			return
		}
		verb, arg, _ := strings.Cut(strings.TrimSuffix(line, "\n"), " ")
		switch verb {
		case "ready":
			if !readyOnce {
				readyOnce = true
				ready <- nil
			}
		case "error":
			if !readyOnce {
				readyOnce = true
				msg, err := strconv.Unquote(arg)
				if err != nil {
					msg = arg
				}
				ready <- supervisorError(msg)
			}
		case "table":
			if raw, err := base64.StdEncoding.DecodeString(arg); err == nil {
				k.mu.Lock()
				k.table = raw
				k.mu.Unlock()
			}
		case "handoff":
			p.handoff <- arg + "\n"
		}
	}
}

// supervisorReadyTimeout bounds a supervisor's start: reading the table and
// attaching to the cgroups take milliseconds.
const supervisorReadyTimeout = 10 * time.Second

// supervisorExitWait bounds how long a supervisor that did not start is
// given to exit by itself (its deferred clean-up: the cgroups it made)
// before it is killed.
const supervisorExitWait = 5 * time.Second

// release closes what the keeper holds for a supervisor that is gone.
func (p *supervisorProc) release() {
	p.ctrl.Close()
	p.inFlightFile.Close()
	unix.Munmap(p.region)
}

// goAhead tells a ready supervisor to start receiving.
func (p *supervisorProc) goAhead() error {
	if _, err := p.ctrl.WriteString("go\n"); err != nil {
		return fmt.Errorf("telling the supervisor to go: %w", err)
	}
	return nil
}

// stopSupervisor stops a supervisor once the server is gone.
func (k *keeper) stopSupervisor(p *supervisorProc) {
	select {
	case <-p.exited:
	case <-time.After(5 * time.Second):
		k.log.Warn("supervisor still running after the server exited; stopping it")
		p.cmd.Process.Signal(unix.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(5 * time.Second):
			p.cmd.Process.Kill()
			<-p.exited
		}
	}
	p.release()
}

// sinceOrZero is how long ago t was, or 0 for the zero time.
func sinceOrZero(t time.Time) time.Duration {
	if t.IsZero() {
		return 0
	}
	return time.Since(t)
}

// upgradeSignal asks the keeper for a new supervisor from the binary on
// disk (vhqos upgrade): a real-time signal, never forwarded to the server.
const upgradeSignal = syscall.Signal(43)

// A supervisor is taken for hung when notifications wait for hungAfter
// without it receiving one; the keeper looks every hungCheck (so a hung
// supervisor is killed 3 to 5 s after it stopped). A healthy
// one takes a notification within microseconds. Each look wakes the
// keeper and the Go runtime's sysmon: an idle keeper's wake-ups are
// mostly these.
const (
	hungCheck = time.Second
	hungAfter = 3 * time.Second
)

// tableMemfd puts raw in a sealed memfd for a new supervisor (tableFd).
func tableMemfd(raw []byte) (*os.File, error) {
	fd, err := unix.MemfdCreate("vhqos-table", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("passing the table in force: %w", err)
	}
	f := os.NewFile(uintptr(fd), "table")
	if _, err := f.Write(raw); err != nil {
		f.Close()
		return nil, fmt.Errorf("passing the table in force: %w", err)
	}
	unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_WRITE|unix.F_SEAL_GROW|unix.F_SEAL_SHRINK|unix.F_SEAL_SEAL)
	// The supervisor inherits this open file, offset and all: it reads
	// from the start (readTableInForce), and so does a plain read.
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		return nil, fmt.Errorf("passing the table in force: %w", err)
	}
	return f, nil
}
