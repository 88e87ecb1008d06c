package status

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/vhqos/vhqos/policy"
)

// Report is a snapshot of one running vhqos.
//
// `vhqos run` is two processes: the keeper, which `vhqos run` started as,
// holds the seccomp notification fd, is the server's parent and lives as
// long as the server; and the supervisor, the keeper's child, which
// answers the notifications. The keeper starts a new supervisor when one
// crashes, and replaces it on `vhqos upgrade`. While none runs the keeper
// fails open: it answers every notification "continue", the kernel makes
// the call, and the connections of that moment get no QoS.
type Report struct {
	// PID is the pid of `vhqos run`, that is of the keeper: the same as
	// KeeperPID, kept under its old name for scripts written before the
	// keeper and the supervisor were split.
	PID       int    `json:"pid"`
	ServerPID int    `json:"server_pid"`
	Config    string `json:"config"`
	// Started is when `vhqos run` started: the same as KeeperStarted.
	Started    time.Time `json:"started"`
	Now        time.Time `json:"now"`
	Generation uint64    `json:"table_generation"`
	// TableRefused is true while the table file holds a table vhqos
	// refused, the one before it still in force; false once a table
	// from the file is in force.
	TableRefused bool `json:"table_refused"`
	// TableRefusedWhy is why, while TableRefused: the table's mistakes
	// as vhqos check prints them, or what applying it ran into.
	TableRefusedWhy string  `json:"table_refused_why,omitempty"`
	Cgroup          int     `json:"cgroup_version"`
	Classes         []Class `json:"vhosts"`
	// Tenants are the table's tenants, in file order.
	Tenants    []Tenant `json:"tenants,omitempty"`
	Supervisor Counters `json:"supervisor"`

	// KeeperPID is the keeper's pid.
	KeeperPID int `json:"keeper_pid"`
	// SupervisorPID is the pid of the supervisor answering notifications
	// now; 0 while none runs (between a crash and its restart).
	SupervisorPID int `json:"supervisor_pid"`
	// KeeperVersion and SupervisorVersion are the versions of the two
	// binaries as `vhqos version` prints them; they differ after a
	// `vhqos upgrade` to a new binary, which replaces the supervisor only.
	KeeperVersion     string `json:"keeper_version"`
	SupervisorVersion string `json:"supervisor_version"`
	// KeeperStarted is when the keeper started (the same as Started).
	KeeperStarted time.Time `json:"keeper_started"`
	// SupervisorStarted is when the running supervisor started: after a
	// restart or an upgrade, the latest one.
	SupervisorStarted time.Time `json:"supervisor_started"`
	// SupervisorRestarts counts the supervisors the keeper started again
	// after one crashed (exited without being asked to); upgrades are not
	// counted here.
	SupervisorRestarts uint64 `json:"supervisor_restarts"`
	// Upgrades counts the supervisors replaced by `vhqos upgrade`.
	Upgrades uint64 `json:"upgrades"`
	// FailedOpen is the total time no supervisor ran since the keeper
	// started, in which the keeper answered notifications "continue". In
	// JSON it is failed_open_seconds, a number of seconds with a fraction
	// (nanosecond resolution).
	FailedOpen time.Duration `json:"-"`
	// FailedOpenNotifications counts the notifications the keeper
	// answered "continue" because no supervisor was there: accepts and,
	// with fork or full tracking, the other calls vhqos intercepts, that
	// the kernel made without QoS.
	FailedOpenNotifications uint64 `json:"failed_open_notifications"`
	// LostConnections counts connections a crashed supervisor held,
	// accepted from the listener but not yet handed over to the server,
	// that were lost with it (their clients saw them closed). It is an
	// upper bound: one the supervisor was just taking from the listener,
	// or had just handed over, when it died counts too.
	LostConnections uint64 `json:"connections_lost"`
}

// reportJSON is Report without its methods, so that MarshalJSON and
// UnmarshalJSON can use encoding/json's own work for all other fields.
type reportJSON Report

// MarshalJSON writes r with FailedOpen as failed_open_seconds, a number
// of seconds, as a script reading `vhqos status --json` expects it.
func (r Report) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		reportJSON
		FailedOpen float64 `json:"failed_open_seconds"`
	}{reportJSON(r), r.FailedOpen.Seconds()})
}

// UnmarshalJSON reads what MarshalJSON writes. A failed_open_seconds that
// is negative or too large for a time.Duration (about 292 years) is an
// error.
func (r *Report) UnmarshalJSON(data []byte) error {
	aux := struct {
		*reportJSON
		FailedOpen float64 `json:"failed_open_seconds"`
	}{reportJSON: (*reportJSON)(r)}
	if err := json.Unmarshal(data, &aux); err != nil {
		return err
	}
	ns := math.Round(aux.FailedOpen * float64(time.Second))
	if ns < 0 || ns >= math.MaxInt64 {
		return fmt.Errorf("failed_open_seconds %v is out of range (0 to %.0f seconds)", aux.FailedOpen, time.Duration(math.MaxInt64).Seconds())
	}
	r.FailedOpen = time.Duration(ns)
	return nil
}

// Class is one vhost, or the defaults, with its usage.
type Class struct {
	Name string `json:"name"`
	// Default is the class of connections matching no vhost.
	Default bool `json:"default,omitempty"`
	// Tenant is the tenant the vhost belongs to, "" for none.
	Tenant string `json:"tenant,omitempty"`
	Cgroup string `json:"cgroup"`
	// DSCP is the class's mark, -1 when it has none.
	DSCP        int     `json:"dscp"`
	CPUWeight   uint64  `json:"cpu_weight,omitempty"`
	CPUMax      float64 `json:"cpu_max_percent,omitempty"`
	IOWeight    uint64  `json:"io_weight,omitempty"`
	Connections uint64  `json:"connections_total"`
	Live        int     `json:"connections_live"`
	PIDs        []int   `json:"pids"`
	CPUUsec     uint64  `json:"cpu_usec"`
	Throttled   uint64  `json:"cpu_throttled_usec"`
	// Faults counts the periods in which cpu_max held the class back.
	Faults       uint64 `json:"cpu_max_faults"`
	IOReadBytes  uint64 `json:"io_read_bytes"`
	IOWriteBytes uint64 `json:"io_write_bytes"`
	// Admission is the class's connection caps and what they decided;
	// nil when the class has no cap.
	Admission *Admission `json:"admission,omitempty"`
	// Memory and Tasks are the class's memory and task limits and what
	// the kernel counted against them; nil where the kernel does not
	// account for the class (under cgroup v2 until some class has such a
	// limit, which turns the controller on).
	Memory *Memory `json:"memory,omitempty"`
	Tasks  *Tasks  `json:"tasks,omitempty"`
	// EgressRate and ConnectionRate are the class's egress_rate and
	// connection_rate in bits per second, 0 for none.
	EgressRate     uint64 `json:"egress_rate_bits_per_second,omitempty"`
	ConnectionRate uint64 `json:"connection_rate_bits_per_second,omitempty"`
	// Egress is what the kernel counted in the class's shaper (its HTB
	// class on the shaped devices, added up); nil without egress_rate.
	Egress *Egress `json:"egress,omitempty"`
	// Threads is how many threads the class's cgroup holds: those of its
	// processes and, with placement "thread", the threads placed there
	// alone while they serve one of its connections.
	Threads int `json:"threads"`
}

// Admission is a class's connection caps (max_connections,
// max_connections_per_ip), its connections counted against them, and the
// outcome of every connection the caps decided, since vhqos started: like
// CloudLinux LVE's entry-process faults, Alternate and Refused are the
// times the class was full.
type Admission struct {
	MaxConnections      int `json:"max_connections,omitempty"`
	MaxConnectionsPerIP int `json:"max_connections_per_ip,omitempty"`
	// OverLimit is what a connection over a cap gets: "refuse", or the
	// name of the class that serves it instead.
	OverLimit string `json:"over_limit"`
	// Open is how many connections count against max_connections now:
	// admitted to the class and held open by a server process.
	Open int `json:"open"`
	// Admitted counts the connections the caps let in, Alternate those
	// sent to the over_limit class, Refused those refused.
	Admitted  uint64 `json:"admitted"`
	Alternate uint64 `json:"alternate"`
	Refused   uint64 `json:"refused"`
}

// Counters are the supervisor's own health figures.
type Counters struct {
	Notifications   uint64 `json:"notifications"`
	Accepted        uint64 `json:"accepted"`
	Continued       uint64 `json:"left_to_kernel"`
	Requeued        uint64 `json:"requeued"`
	PlacementErrors uint64 `json:"placement_errors"`
	Errors          uint64 `json:"errors"`
	NamesFound      uint64 `json:"names_found"`
	NameFallbacks   uint64 `json:"name_fallbacks"`
	NameTimeouts    uint64 `json:"name_timeouts"`
	Reclassified    uint64 `json:"reclassified"`
	Reloads         uint64 `json:"reloads"`
	ReloadsRefused  uint64 `json:"reloads_refused"`
	// Track is the tracking mode; the table sizes that follow show that
	// nothing grows without bound: server processes the supervisor knows,
	// its copies of listening sockets, connections it follows (every one
	// in fork and full tracking; in accept tracking those a host name
	// decided, remembered for reloads).
	Track               string `json:"track"`
	KnownProcesses      int    `json:"known_processes"`
	ListenerCopies      int    `json:"listener_copies"`
	FollowedConnections int    `json:"followed_connections"`
	// Placement is what moves into a connection's cgroup ("process" or
	// "thread"); MultiThreadedProcesses counts the server processes seen
	// with more than one thread, UnplacedMultiThreaded the connections
	// such a process took that placement "process" left outside their
	// cgroup, and ThreadPlacements the moves of single threads.
	Placement              string `json:"placement"`
	MultiThreadedProcesses uint64 `json:"multi_threaded_processes"`
	UnplacedMultiThreaded  uint64 `json:"unplaced_multi_threaded"`
	ThreadPlacements       uint64 `json:"thread_placements"`
}

// WriteTable prints r for a terminal. With prev (an earlier report of the
// same vhqos) the CPU column is the rate between the two, as top shows it.
func (r *Report) WriteTable(w io.Writer, prev *Report) {
	fmt.Fprintf(w, "vhqos pid %d, server pid %d, up %s, table %s (generation %d), cgroup v%d\n",
		r.PID, r.ServerPID, r.Now.Sub(r.Started).Round(time.Second), r.Config, r.Generation, r.Cgroup)
	if r.TableRefused {
		fmt.Fprintf(w, "table refused: %s holds a table vhqos refused, and the one before stays in force", r.Config)
		if r.TableRefusedWhy == "" {
			fmt.Fprintf(w, " (vhqos check %s, or the log, says why)\n", r.Config)
		} else {
			fmt.Fprintf(w, ":\n  %s\n", strings.ReplaceAll(r.TableRefusedWhy, "\n", "\n  "))
		}
	}
	r.writeParts(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "VHOST\tTENANT\tLIVE\tCONNS\tPROCS\tTHREADS\tCPU%\tCPU s\tTHROTTLED s\tFAULTS\tIO READ\tIO WRITE\tDSCP\tLIMITS")
	for _, c := range r.Classes {
		rate := "-"
		if prev != nil {
			for _, p := range prev.Classes {
				if p.Name == c.Name && r.Now.After(prev.Now) && c.CPUUsec >= p.CPUUsec {
					rate = fmt.Sprintf("%.1f", float64(c.CPUUsec-p.CPUUsec)/float64(r.Now.Sub(prev.Now).Microseconds())*100)
				}
			}
		}
		tenant := "-"
		if c.Tenant != "" {
			tenant = c.Tenant
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%s\t%.1f\t%.1f\t%d\t%s\t%s\t%s\t%s\n",
			c.Name, tenant, c.Live, c.Connections, len(c.PIDs), c.Threads, rate, float64(c.CPUUsec)/1e6, float64(c.Throttled)/1e6,
			c.Faults, bytes(c.IOReadBytes), bytes(c.IOWriteBytes), dscp(c.DSCP), c.limits())
	}
	tw.Flush()
	s := r.Supervisor
	fmt.Fprintf(w, "supervisor: %d notifications, %d accepted, %d left to the kernel, %d requeued, %d placement errors, %d errors, %d reloads (%d refused)\n",
		s.Notifications, s.Accepted, s.Continued, s.Requeued, s.PlacementErrors, s.Errors, s.Reloads, s.ReloadsRefused)
	fmt.Fprintf(w, "tracking %s: %d processes known, %d listening sockets, %d connections followed\n",
		s.Track, s.KnownProcesses, s.ListenerCopies, s.FollowedConnections)
	r.writeThreads(w)
	r.writeTenants(w)
	r.writeAdmissions(w)
	r.writeMemoryTasks(w)
	r.writeBandwidth(w)
	if s.NamesFound+s.NameFallbacks+s.NameTimeouts > 0 {
		fmt.Fprintf(w, "host names: %d found, %d connections without one, %d timed out waiting for one, %d keep-alive connections moved by a later request\n",
			s.NamesFound, s.NameFallbacks, s.NameTimeouts, s.Reclassified)
	}
}

// writeThreads says what the placement in force does with a multi-threaded
// server, when the server has such processes.
func (r *Report) writeThreads(w io.Writer) {
	s := r.Supervisor
	switch {
	case s.Placement == "thread":
		fmt.Fprintf(w, "placement by thread: %d multi-threaded server processes, %d moves of a serving thread\n",
			s.MultiThreadedProcesses, s.ThreadPlacements)
	case s.MultiThreadedProcesses > 0:
		fmt.Fprintf(w, "placement by process: %d multi-threaded server processes stay home (moving one moves all its threads, which serve other vhosts too); %d of their connections were served outside their vhost's cgroup; set placement = \"thread\" in [settings] to place the serving threads\n",
			s.MultiThreadedProcesses, s.UnplacedMultiThreaded)
	}
}

// writeParts prints the keeper and the supervisor, and what failing open
// cost. A report without a keeper pid comes from a vhqos older than the
// split, which has nothing to say here.
func (r *Report) writeParts(w io.Writer) {
	if r.KeeperPID == 0 && r.SupervisorPID == 0 {
		return
	}
	sup := "no supervisor running"
	if r.SupervisorPID != 0 {
		sup = fmt.Sprintf("supervisor pid %d (%s, up %s)", r.SupervisorPID, versionText(r.SupervisorVersion), r.Now.Sub(r.SupervisorStarted).Round(time.Second))
	}
	fmt.Fprintf(w, "keeper pid %d (%s, up %s), %s, %d restarts after a crash, %d upgrades\n",
		r.KeeperPID, versionText(r.KeeperVersion), r.Now.Sub(r.KeeperStarted).Round(time.Second), sup, r.SupervisorRestarts, r.Upgrades)
	fmt.Fprintf(w, "failed open %.3f s without a supervisor: %d notifications left to the kernel, %d accepted connections lost\n",
		r.FailedOpen.Seconds(), r.FailedOpenNotifications, r.LostConnections)
}

// writeAdmissions prints a line per class with a connection cap: its
// open connections against the cap and what the caps decided.
func (r *Report) writeAdmissions(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	header := false
	for _, c := range r.Classes {
		a := c.Admission
		if a == nil {
			continue
		}
		if !header {
			fmt.Fprintln(tw, "CAPPED VHOST\tOPEN/MAX\tPER IP\tADMITTED\tALTERNATE\tREFUSED\tOVER LIMIT")
			header = true
		}
		limit, perIP := "-", "-"
		if a.MaxConnections > 0 {
			limit = strconv.Itoa(a.MaxConnections)
		}
		if a.MaxConnectionsPerIP > 0 {
			perIP = strconv.Itoa(a.MaxConnectionsPerIP)
		}
		fmt.Fprintf(tw, "%s\t%d/%s\t%s\t%d\t%d\t%d\t%s\n", c.Name, a.Open, limit, perIP, a.Admitted, a.Alternate, a.Refused, a.OverLimit)
	}
	tw.Flush()
}

func versionText(v string) string {
	if v == "" {
		return "version unknown"
	}
	return "version " + v
}

func (c Class) limits() string {
	var parts []string
	if c.CPUWeight != 0 {
		parts = append(parts, "cpu_weight="+strconv.FormatUint(c.CPUWeight, 10))
	}
	if c.CPUMax != 0 {
		parts = append(parts, "cpu_max="+strconv.FormatFloat(c.CPUMax, 'f', -1, 64)+"%")
	}
	if c.IOWeight != 0 {
		parts = append(parts, "io_weight="+strconv.FormatUint(c.IOWeight, 10))
	}
	parts = c.memoryTaskLimits(parts)
	if c.EgressRate != 0 {
		parts = append(parts, "egress_rate="+bitRate(c.EgressRate))
	}
	if c.ConnectionRate != 0 {
		parts = append(parts, "connection_rate="+bitRate(c.ConnectionRate))
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, " ")
}

// dscp writes a class's mark as the table may: its standard name and
// number ("AF21 (18)"), or the number alone when it has no name.
func dscp(d int) string {
	if d < 0 {
		return "-"
	}
	n := strconv.Itoa(d)
	if name := policy.DSCPName(d); name != n {
		return name + " (" + n + ")"
	}
	return n
}

func bytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return strconv.FormatUint(n, 10) + "B"
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f%c", float64(n)/float64(div), "KMGTPE"[exp])
}
