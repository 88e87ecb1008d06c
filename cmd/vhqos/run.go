package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vhqos/vhqos/cgroup"
	"github.com/vhqos/vhqos/policy"
	"github.com/vhqos/vhqos/shim"
	"github.com/vhqos/vhqos/status"
	"github.com/vhqos/vhqos/supervisor"
	"golang.org/x/sys/unix"
)

const defaultConfig = "/etc/vhqos/qos.toml"

// forwarded are the signals vhqos passes on to the server.
var forwarded = []os.Signal{
	unix.SIGTERM, unix.SIGINT, unix.SIGHUP, unix.SIGQUIT,
	unix.SIGUSR1, unix.SIGUSR2, unix.SIGWINCH,
}

type runOptions struct {
	config      string
	stopTimeout time.Duration
	logLevel    string
	logFormat   string
	statusPath  string
	metricsAddr string
	argv        []string
	// inherited are the fds from 3 up vhqos was started with (see
	// shim.InheritedFds); the server gets them at the same numbers.
	inherited []int
}

// parseRunFlags reads vhqos run's command line; ok false means exit with
// code (its help was printed, or what is wrong with it).
func parseRunFlags(args []string, stdout, stderr io.Writer) (o runOptions, code int, ok bool) {
	fs := newFlagSet("run")
	fs.StringVar(&o.config, "config", defaultConfig, "read the QoS table from `FILE`")
	o.stopTimeout = 30 * time.Second
	fs.Var(durationValue{d: &o.stopTimeout, min: 0}, "stop-timeout", "after passing on TERM, INT or QUIT, wait `DURATION` for the server to exit, then kill everything left (0: at once)")
	fs.StringVar(&o.logLevel, "log-level", "info", "log on stderr what is at `LEVEL` or above: debug, info, warn or error")
	fs.StringVar(&o.logFormat, "log-format", "text", "log in `FORMAT`: text, or json (one object a line)")
	fs.StringVar(&o.statusPath, "status-socket", status.DefaultSocket, "answer vhqos status, reload and upgrade on the unix socket `PATH`; give a second vhqos on the same host its own")
	fs.StringVar(&o.metricsAddr, "metrics-listen", "", "serve Prometheus metrics at http://`ADDR`/metrics; \":9464\" means 127.0.0.1:9464 (default: off)")
	if o.argv, code, ok = parseLeading(fs, args, stdout, stderr); !ok {
		return o, code, false
	}
	// The path vhqos status, reload and the metrics give is read by
	// vhqos reload, which runs in another directory.
	var err error
	if o.config, err = filepath.Abs(o.config); err != nil {
		fmt.Fprintln(stderr, "vhqos run: --config:", err)
		return o, exitUsage, false
	}
	if o.metricsAddr != "" {
		if err := checkMetricsAddr(o.metricsAddr); err != nil {
			fmt.Fprintf(stderr, "vhqos run: --metrics-listen: %v\n", err)
			return o, exitUsage, false
		}
	}
	if len(o.argv) == 0 {
		fmt.Fprintln(stderr, "vhqos run: no server command; usage: vhqos run [options] -- SERVER [ARGS...] (see 'vhqos help run')")
		return o, exitUsage, false
	}
	return o, 0, true
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: use debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: use text or json", format)
}

func runCommand(args []string, stdout, stderr io.Writer) int {
	// Before vhqos opens anything: what it holds now beyond stdio came from
	// its parent, for the server (the sockets of socket activation).
	inherited, err := shim.InheritedFds()
	if err != nil {
		fmt.Fprintln(stderr, "vhqos run:", err)
		return 1
	}
	opts, code, ok := parseRunFlags(args, stdout, stderr)
	if !ok {
		return code
	}
	opts.inherited = inherited
	log, err := newLogger(stderr, opts.logLevel, opts.logFormat)
	if err != nil {
		fmt.Fprintln(stderr, "vhqos run:", err)
		return exitUsage
	}
	code, err = keep(log, opts)
	if err != nil {
		fmt.Fprintln(stderr, "vhqos run:", err)
		if errors.Is(err, errRefusedTable) {
			return exitUsage
		}
		return 1
	}
	return code
}

// logWarnings logs what did not stop a table but leaves it short of what
// the file says (limits on devices this machine lacks), in vhqos check's
// words, with file, line and column.
func logWarnings(log *slog.Logger, t *policy.Table) {
	for _, w := range t.Warnings {
		log.Warn("QoS table warning", "warning", w.String())
	}
}

// socketActivation decides whether the sockets of socket activation
// (sd_listen_fds(3): LISTEN_FDS fds from 3 up, LISTEN_PID the process meant
// to take them) were meant for this vhqos (pid self), so that the server
// must find its own pid in LISTEN_PID. A LISTEN_PID naming another process
// is left alone: the server would have ignored it natively too. problem,
// if not "", says why the server will not find what LISTEN_FDS promises.
func socketActivation(listenPID, listenFDs string, self int, inherited []int) (forUs bool, problem string) {
	if listenPID != strconv.Itoa(self) {
		return false, ""
	}
	n, err := strconv.Atoi(listenFDs)
	if err != nil || n < 0 {
		return true, fmt.Sprintf("LISTEN_FDS=%q is not a count of fds", listenFDs)
	}
	have := 0
	for _, fd := range inherited {
		if fd >= 3 && fd-3 < n {
			have++
		}
	}
	if have < n {
		return true, fmt.Sprintf("LISTEN_FDS=%d but vhqos inherited only %d of fds 3..%d (it inherited %v)", n, have, 3+n-1, inherited)
	}
	return true, ""
}

func exitStatus(ps *os.ProcessState) int {
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ps.ExitCode()
}

// groupName is the cgroup of a class of t: the defaults' group, or the
// vhost's, inside its tenants' (policy.Table.GroupOf).
func groupName(c *policy.Class, t *policy.Table) string { return t.GroupOf(c) }

// applyTable gives every class of the table its cgroup and limits, each
// tenant's before those inside it.
func applyTable(cg *cgroup.Manager, t *policy.Table) error {
	for _, tn := range tenantsOuterFirst(t) {
		if err := cg.Set(t.TenantGroup(tn), tn.Resources); err != nil {
			return fmt.Errorf("setting up tenant %q: %w", tn.Name, err)
		}
	}
	if err := cg.Set(groupName(&t.Defaults, t), t.Defaults.Resources); err != nil {
		return fmt.Errorf("setting up the defaults' cgroup: %w", err)
	}
	for i := range t.VHosts {
		if err := cg.Set(groupName(&t.VHosts[i], t), t.VHosts[i].Resources); err != nil {
			return fmt.Errorf("setting up vhost %q: %w", t.VHosts[i].Name, err)
		}
	}
	return nil
}

// tenantsOuterFirst lists t's tenants so that each comes after the tenant
// it is inside: their cgroups are made in this order.
func tenantsOuterFirst(t *policy.Table) []*policy.Tenant {
	out := make([]*policy.Tenant, len(t.Tenants))
	for i := range t.Tenants {
		out[i] = &t.Tenants[i]
	}
	slices.SortStableFunc(out, func(a, b *policy.Tenant) int {
		return strings.Count(t.TenantGroup(a), "/") - strings.Count(t.TenantGroup(b), "/")
	})
	return out
}

// decision is what the supervisor needs to know of a class of t.
func decision(class *policy.Class, t *policy.Table) supervisor.Decision {
	return supervisor.Decision{Group: groupName(class, t), DSCP: class.DSCP, Quota: class.Resources.CPUQuotaPercent != 0}
}

// tableClassifier turns QoS table lookups into supervisor decisions. The
// decisions are made once per table: a lookup runs for every accepted
// connection and must not allocate (a cgroup name is built from the
// vhost's).
type tableClassifier struct {
	t *policy.Table
	// decisions are by index into t.VHosts, the defaults' last: a class's
	// Admission points at its alternate's entry.
	decisions []supervisor.Decision
}

func newTableClassifier(t *policy.Table) tableClassifier {
	c := tableClassifier{t: t, decisions: make([]supervisor.Decision, len(t.VHosts)+1)}
	classes := make([]*policy.Class, 0, len(t.VHosts)+1)
	for i := range t.VHosts {
		classes = append(classes, &t.VHosts[i])
	}
	classes = append(classes, &t.Defaults)
	index := make(map[*policy.Class]int, len(classes))
	minors := egressMinors(t)
	for i, class := range classes {
		c.decisions[i] = decision(class, t)
		c.decisions[i].Mark, c.decisions[i].Pacing = shapingOf(class, minors)
		index[class] = i
	}
	for i, class := range classes {
		a := class.Admission
		if !a.Capped() {
			continue
		}
		adm := &supervisor.Admission{
			Name:           class.Name,
			OverLimit:      a.OverLimit,
			MaxConnections: a.MaxConnections, MaxConnectionsPerIP: a.MaxConnectionsPerIP,
			RefuseStatus: a.RefuseStatus, RetryAfter: a.RetryAfter,
		}
		if a.OverLimit != policy.OverLimitRefuse {
			// policy.Parse resolved the name; a table without it would not
			// have been accepted.
			if alt := t.Class(a.OverLimit); alt != nil {
				adm.Alternate = &c.decisions[index[alt]]
			}
		}
		c.decisions[i].Admission = adm
	}
	return c
}

// of returns the decision for the vhost at index i, or the defaults' for -1.
func (c tableClassifier) of(i int) supervisor.Decision {
	if i >= 0 {
		return c.decisions[i]
	}
	return c.decisions[len(c.decisions)-1]
}

func (c tableClassifier) ClassifyAddr(local netip.AddrPort) supervisor.Decision {
	return c.of(c.t.Matcher.MatchAddr(local))
}

func (c tableClassifier) ClassifyListener(bound netip.AddrPort) (supervisor.Decision, bool) {
	if c.t.ProxyMayApply(bound) {
		// The PROXY header of each connection names its address.
		return supervisor.Decision{}, false
	}
	i, ok := c.t.Matcher.ListenerDecides(bound)
	if !ok {
		return supervisor.Decision{}, false
	}
	return c.of(i), true
}

func (c tableClassifier) NamesApply(local netip.AddrPort) bool { return c.t.Matcher.NamesApply(local) }

// ClassifyName is policy.Table.ClassifyName: a name rule, else the address.
func (c tableClassifier) ClassifyName(host string, local netip.AddrPort) supervisor.Decision {
	if i := c.t.Matcher.MatchName(host, local); i >= 0 {
		return c.decisions[i]
	}
	return c.ClassifyAddr(local)
}

func (c tableClassifier) SniffLimits() (time.Duration, int) { return c.t.Settings.SniffLimits() }

func (c tableClassifier) ProxyTrusted(local netip.AddrPort) bool { return c.t.ProxyTrusted(local) }

// ClassifyPath is policy.Table.ClassifyPath: the unix: rule, else the
// defaults.
func (c tableClassifier) ClassifyPath(path string) supervisor.Decision {
	return c.of(c.t.Matcher.MatchPath(path))
}

func (c tableClassifier) ListenerDecidesPath(path string) (supervisor.Decision, bool) {
	i, ok := c.t.Matcher.ListenerDecidesPath(path)
	if !ok {
		return supervisor.Decision{}, false
	}
	return c.of(i), true
}

func (c tableClassifier) NamesApplyPath(path string) bool { return c.t.Matcher.NamesApplyPath(path) }

// ClassifyNameOnPath is policy.Table.ClassifyNameOnPath: a name rule
// that applies on the socket, else its path.
func (c tableClassifier) ClassifyNameOnPath(host, path string) supervisor.Decision {
	if i := c.t.Matcher.MatchNameOnPath(host, path); i >= 0 {
		return c.decisions[i]
	}
	return c.ClassifyPath(path)
}

// NameMatches reports whether a name rule of the table claims host on a
// connection to local (supervisor.NameMatcher: a FastCGI request whose
// HTTP_HOST none claims is then classified by its SERVER_NAME).
func (c tableClassifier) NameMatches(host string, local netip.AddrPort) bool {
	return c.t.Matcher.MatchName(host, local) >= 0
}

// NameMatchesOnPath is NameMatches on the unix listener bound to path.
func (c tableClassifier) NameMatchesOnPath(host, path string) bool {
	return c.t.Matcher.MatchNameOnPath(host, path) >= 0
}

// summarizeFallbacks logs, once per interval and only when there were any,
// how many connections matched no vhost: a line per connection would
// flood the log, none would hide a mistyped address in the table.
func summarizeFallbacks(ctx context.Context, log *slog.Logger, sup *supervisor.Supervisor, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	var last uint64
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			n := sup.GroupConnections()[cgroup.DefaultGroup]
			if n > last {
				log.Info("connections matched no vhost and got the defaults", "connections", n-last, "interval", every)
			}
			last = n
		}
	}
}
