package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vhqos/vhqos/cgroup"
	"github.com/vhqos/vhqos/failopen"
	"github.com/vhqos/vhqos/intercept"
	"github.com/vhqos/vhqos/policy"
	"github.com/vhqos/vhqos/status"
	"github.com/vhqos/vhqos/supervisor"
	"golang.org/x/sys/unix"
)

// The supervisor process: `vhqos supervise`, started by the keeper (vhqos
// run, keeper.go) and never by hand. The keeper holds what must outlive a
// crash (the notification fd, the server, the cgroup subtree, the status
// and metrics sockets) and hands it down at these fd numbers; the
// supervisor process holds the QoS table and everything that classifies.

// Fds the keeper passes to each supervisor process (exec.Cmd.ExtraFiles
// start at 3).
const (
	ctrlFd     = 3 // control socket: the supervisor writes "ready", the keeper "go"
	notifyFd   = 4 // the seccomp notification fd
	inFlightFd = 5 // memfd of the failopen.Table
	statusFd   = 6 // the status socket's listener
	metricsFd  = 7 // the metrics listener, when --metrics-listen is set
	tableFd    = 8 // the table in force, when keeperState.Table says so
)

// keeperState is what the keeper tells a supervisor process it starts
// (--keeper-state, JSON): who it works for and what happened before it.
type keeperState struct {
	KeeperPID     int       `json:"keeper_pid"`
	KeeperVersion string    `json:"keeper_version"`
	KeeperStarted time.Time `json:"keeper_started"`
	ServerPID     int       `json:"server_pid"`
	CgroupParent  string    `json:"cgroup_parent"`
	CgroupName    string    `json:"cgroup_name"`
	// Track is the tracking the filter was installed for; a table that
	// says otherwise cannot change it without a restart of vhqos run.
	Track string `json:"track"`
	// Placement is the placement the filter was installed for (it adds
	// the read family), fixed like Track.
	Placement string `json:"placement"`
	Metrics   bool   `json:"metrics"`
	// Restarts counts the supervisors started after one died.
	Restarts                uint64        `json:"restarts"`
	Upgrades                uint64        `json:"upgrades"`
	FailedOpen              time.Duration `json:"failed_open_ns"`
	FailedOpenNotifications uint64        `json:"failed_open_notifications"`
	LostConnections         uint64        `json:"lost_connections"`
	// Table says the table last in force waits at tableFd.
	Table bool `json:"table"`
	// ShapeDevices are the devices the keeper claimed for egress_rate
	// (bandwidth.go); a table that says otherwise cannot change them.
	ShapeDevices []string `json:"shape_devices,omitempty"`
}

// tableSettings is what `vhqos supervise --settings` prints for the keeper:
// the parts of the table it needs before the server starts.
type tableSettings struct {
	CgroupParent string   `json:"cgroup_parent"`
	Track        string   `json:"track"`
	Placement    string   `json:"placement"`
	Syscalls     []string `json:"syscalls"`
	ShapeDevices []string `json:"shape_devices,omitempty"`
}

func superviseCommand(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("supervise")
	config := fs.String("config", defaultConfig, "QoS table")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	logFormat := fs.String("log-format", "text", "text or json")
	settings := fs.Bool("settings", false, "print what the keeper needs of the table, as JSON, and exit")
	state := fs.String("keeper-state", "", "what the keeper says (JSON)")
	if _, code, ok := parseArgs(fs, args, 0, stdout, stderr); !ok {
		return code
	}
	log, err := newLogger(stderr, *logLevel, *logFormat)
	if err != nil {
		fmt.Fprintln(stderr, "vhqos supervise:", err)
		return 2
	}
	var ks keeperState
	if !*settings {
		if err := json.Unmarshal([]byte(*state), &ks); err != nil {
			fmt.Fprintln(stderr, "vhqos supervise: started without --keeper-state: it is started by vhqos run, not by hand")
			return 2
		}
	}
	raw, err := os.ReadFile(*config)
	var table *policy.Table
	if err == nil {
		table, err = policy.Parse(*config, raw)
	} else {
		err = fmt.Errorf("reading the QoS table: %w", err)
	}
	if err != nil && ks.Table {
		// A new supervisor after a crash, and the file broken meanwhile:
		// the table in force goes on, as a refused reload leaves it.
		log.Error("refused QoS table; the previous one stays in force", "path", *config, "problems", err.Error())
		raw, err = readTableInForce(os.NewFile(tableFd, "table"))
		if err == nil {
			table, err = policy.Parse(*config, raw)
		}
	}
	if err != nil {
		// vhqos run says what it does about it.
		fmt.Fprintln(stderr, err)
		return 2
	}
	if *settings {
		logWarnings(log, table)
		track, placement := table.Settings.Track, table.Settings.Placement
		json.NewEncoder(stdout).Encode(tableSettings{CgroupParent: table.Settings.CgroupParent, Track: track.String(),
			Placement: placement.String(), Syscalls: intercept.Syscalls(track, placement),
			ShapeDevices: table.Settings.ShapeDevices})
		return 0
	}
	log = log.With("supervisor_pid", os.Getpid())
	if err := supervise(log, *config, table, raw, ks); err != nil {
		var told errToldKeeper
		if !errors.As(err, &told) {
			log.Error("supervisor stopped", "err", err)
		}
		return 1
	}
	return 0
}

// errToldKeeper is an error that kept a supervisor from starting and that
// it told the keeper, whose vhqos run says it (or logs it, for a
// supervisor started after a crash): it is not logged a second time.
type errToldKeeper struct{ error }

func (e errToldKeeper) Unwrap() error { return e.error }

// readTableInForce reads the table the keeper passed (tableMemfd) from its
// start, whatever the shared file offset says (it is the keeper's open
// file, and every supervisor it starts shares it). An empty one is an
// error: the keeper passes a table only when one was in force, and an
// empty table would silently drop every vhost.
func readTableInForce(f *os.File) ([]byte, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("reading the table in force from the keeper: %w", err)
	}
	raw, err := io.ReadAll(io.NewSectionReader(f, 0, fi.Size()))
	if err != nil {
		return nil, fmt.Errorf("reading the table in force from the keeper: %w", err)
	}
	if len(raw) == 0 {
		return nil, errors.New("the keeper passed an empty table in force")
	}
	return raw, nil
}

// supervise runs the supervisor for the keeper until the server is gone or
// the keeper says stop (SIGTERM).
func supervise(log *slog.Logger, config string, table *policy.Table, raw []byte, ks keeperState) (err error) {
	started := time.Now()
	// The keeper forwards what the operator sends; a terminal's Ctrl-C
	// reaches the keeper, not this process group.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, unix.SIGTERM, unix.SIGHUP)
	defer signal.Stop(sigs)

	ctrl := os.NewFile(ctrlFd, "control")
	defer ctrl.Close()
	// Until it is ready, an error that stops the supervisor is the
	// keeper's to show (keeper.listen): said on the control socket before
	// it closes, which the keeper reads as the supervisor's end.
	ready := false
	defer func() {
		if err != nil && !ready {
			if _, werr := ctrl.WriteString("error " + strconv.Quote(err.Error()) + "\n"); werr == nil {
				err = errToldKeeper{err}
			}
		}
	}()
	region, err := failopen.Map(inFlightFd)
	if err != nil {
		return err
	}
	inFlight, err := failopen.Attach(region)
	if err != nil {
		return err
	}
	statusListener, err := net.FileListener(os.NewFile(statusFd, "status"))
	if err != nil {
		return fmt.Errorf("taking the status socket from the keeper: %w", err)
	}
	defer statusListener.Close()
	var metrics *status.Metrics
	var metricsListener net.Listener
	var report func() *status.Report
	if ks.Metrics {
		if metricsListener, err = net.FileListener(os.NewFile(metricsFd, "metrics")); err != nil {
			return fmt.Errorf("taking the metrics listener from the keeper: %w", err)
		}
		defer metricsListener.Close()
		metrics = status.NewMetrics(func() *status.Report { return report() })
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The placement is parsed before the cgroups are attached: thread
	// placement makes the threaded subtree (cgroup v2) they need.
	placement, err := intercept.ParsePlacement(ks.Placement)
	if err != nil {
		return fmt.Errorf("the keeper's placement: %w", err)
	}
	cg, err := cgroup.New(ctx, cgroup.Options{Parent: ks.CgroupParent, Name: ks.CgroupName, Logger: log, Attach: true,
		Threads: placement == intercept.PlaceThread})
	if err != nil {
		return err
	}
	defer cg.Close(context.Background())
	if err := applyTable(cg, table); err != nil {
		return err
	}
	if !sameDevices(table.Settings.ShapeDevices, ks.ShapeDevices) {
		log.Warn("the table names other shape_devices than vhqos run started with; they take effect when vhqos run restarts", "table", table.Settings.ShapeDevices, "running", ks.ShapeDevices)
	}
	syncShaping(log, ks.ShapeDevices, table)
	track, err := intercept.ParseTrack(ks.Track)
	if err != nil {
		return fmt.Errorf("the keeper's track: %w", err)
	}
	if table.Settings.Track != track {
		log.Warn("the table asks for another track than vhqos run started with; it takes effect when vhqos run restarts", "table", table.Settings.Track, "running", track)
	}
	if table.Settings.Placement != placement {
		log.Warn("the table asks for another placement than vhqos run started with; it takes effect when vhqos run restarts", "table", table.Settings.Placement, "running", placement)
	}
	supOpts := supervisor.Options{
		NotifyFd:   notifyFd,
		Classifier: newTableClassifier(table),
		Placer:     cg,
		Logger:     log,
		Track:      track,
		Placement:  placement,
		InFlight:   inFlight,
	}
	if metrics != nil {
		supOpts.Observe = metrics.Observe
	}
	sup, err := supervisor.New(supOpts)
	if err != nil {
		return err
	}
	// What this supervisor says to the keeper, one line at a time.
	var ctrlMu sync.Mutex
	tell := func(line string) error {
		ctrlMu.Lock()
		defer ctrlMu.Unlock()
		_, err := ctrl.WriteString(line + "\n")
		return err
	}
	tellTable := func(raw []byte) { tell("table " + base64.StdEncoding.EncodeToString(raw)) }
	// Ready: the keeper stops answering for us and says go.
	tellTable(raw)
	if err := tell("ready"); err != nil {
		return fmt.Errorf("telling the keeper this supervisor is ready: %w", err)
	}
	ready = true
	orders := bufio.NewReader(ctrl)
	line, err := orders.ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "go" {
		return fmt.Errorf("waiting for the keeper's go: %q %v", line, err)
	}
	supDone := make(chan error, 1)
	go func() { supDone <- sup.Run(ctx) }()
	log.Info("supervisor started", "version", version, "server_pid", ks.ServerPID, "restarts", ks.Restarts)

	reload := &reloader{path: config, log: log, cg: cg, sup: sup, current: table, raw: raw, applied: tellTable, shapeDevices: ks.ShapeDevices}
	hup := make(chan struct{}, 1)
	report = func() *status.Report {
		rep := buildReport(ks.KeeperStarted, ks.ServerPID, config, reload, cg, sup)
		keeperReport(rep, ks, started)
		return rep
	}
	go status.Serve(ctx, statusListener, log, report)
	go summarizeFallbacks(ctx, log, sup, time.Minute)
	if metrics != nil {
		go metrics.Serve(ctx, metricsListener, log)
	}
	go func() {
		if err := reload.watch(ctx, hup); err != nil {
			log.Error("QoS table changes will not be seen", "err", err)
		}
	}()
	// Later orders from the keeper: adopt what a predecessor handed off,
	// or drain for a successor (vhqos upgrade).
	drain := make(chan struct{})
	go func() {
		for {
			line, err := orders.ReadString('\n')
			if err != nil {
				return // the keeper is gone: keeperDiedSignal says what to do
			}
			verb, arg, _ := strings.Cut(strings.TrimSpace(line), " ")
			switch verb {
			case "adopt":
				var h handoffMessage
				if err := json.Unmarshal([]byte(arg), &h); err != nil {
					log.Error("reading what the previous supervisor handed over", "err", err)
					continue
				}
				sup.Adopt(h.Handoff)
				reload.reloads.Add(h.Reloads)
				reload.refused.Add(h.ReloadsRefused)
				log.Info("took over from the previous supervisor", "accepts", len(h.Accepts))
			case "drain":
				close(drain)
				return
			}
		}
	}()
	for {
		select {
		case <-drain:
			sniff, _ := table.Settings.SniffLimits()
			h := handoffMessage{Handoff: sup.Drain(sniff + time.Second), Reloads: reload.reloads.Load(), ReloadsRefused: reload.refused.Load()}
			raw, _ := json.Marshal(h)
			if err := tell("handoff " + string(raw)); err != nil {
				log.Error("handing over to the next supervisor", "err", err)
			}
			log.Info("handed over to the next supervisor", "accepts", len(h.Accepts), "connections_lost", h.Lost)
			cancel()
			<-supDone
			return nil
		case sig := <-sigs:
			if sig == unix.SIGHUP {
				select {
				case hup <- struct{}{}:
				default:
				}
				continue
			}
			log.Info("supervisor stopping", "signal", sig)
			cancel()
			<-supDone
			return nil
		case err := <-supDone:
			if err != nil && !errors.Is(err, context.Canceled) {
				return err
			}
			return nil
		}
	}
}

// keeperReport fills in what the status report says of the two parts.
func keeperReport(rep *status.Report, ks keeperState, started time.Time) {
	rep.PID, rep.KeeperPID = ks.KeeperPID, ks.KeeperPID
	rep.Started, rep.KeeperStarted = ks.KeeperStarted, ks.KeeperStarted
	rep.KeeperVersion, rep.SupervisorVersion = ks.KeeperVersion, version
	rep.SupervisorPID, rep.SupervisorStarted = os.Getpid(), started
	rep.SupervisorRestarts, rep.Upgrades = ks.Restarts, ks.Upgrades
	rep.FailedOpen, rep.FailedOpenNotifications, rep.LostConnections = ks.FailedOpen, ks.FailedOpenNotifications, ks.LostConnections
}

// handoffMessage is what one supervisor hands the next through the keeper
// (vhqos upgrade).
type handoffMessage struct {
	supervisor.Handoff
	Reloads        uint64 `json:"reloads"`
	ReloadsRefused uint64 `json:"reloads_refused"`
}
