package status

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is a snapshot of one running vhqos.
type Report struct {
	PID        int       `json:"pid"`
	ServerPID  int       `json:"server_pid"`
	Config     string    `json:"config"`
	Started    time.Time `json:"started"`
	Now        time.Time `json:"now"`
	Generation uint64    `json:"table_generation"`
	Cgroup     int       `json:"cgroup_version"`
	Classes    []Class   `json:"vhosts"`
	Supervisor Counters  `json:"supervisor"`
}

// Class is one vhost, or the defaults, with its usage.
type Class struct {
	Name string `json:"name"`
	// Default is the class of connections matching no vhost.
	Default bool   `json:"default,omitempty"`
	Cgroup  string `json:"cgroup"`
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
}

// WriteTable prints r for a terminal. With prev (an earlier report of the
// same vhqos) the CPU column is the rate between the two, as top shows it.
func (r *Report) WriteTable(w io.Writer, prev *Report) {
	fmt.Fprintf(w, "vhqos pid %d, server pid %d, up %s, table %s (generation %d), cgroup v%d\n",
		r.PID, r.ServerPID, r.Now.Sub(r.Started).Round(time.Second), r.Config, r.Generation, r.Cgroup)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "VHOST\tLIVE\tCONNS\tPROCS\tCPU%\tCPU s\tTHROTTLED s\tFAULTS\tIO READ\tIO WRITE\tDSCP\tLIMITS")
	for _, c := range r.Classes {
		rate := "-"
		if prev != nil {
			for _, p := range prev.Classes {
				if p.Name == c.Name && r.Now.After(prev.Now) && c.CPUUsec >= p.CPUUsec {
					rate = fmt.Sprintf("%.1f", float64(c.CPUUsec-p.CPUUsec)/float64(r.Now.Sub(prev.Now).Microseconds())*100)
				}
			}
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\t%.1f\t%.1f\t%d\t%s\t%s\t%s\t%s\n",
			c.Name, c.Live, c.Connections, len(c.PIDs), rate, float64(c.CPUUsec)/1e6, float64(c.Throttled)/1e6,
			c.Faults, bytes(c.IOReadBytes), bytes(c.IOWriteBytes), dscp(c.DSCP), c.limits())
	}
	tw.Flush()
	s := r.Supervisor
	fmt.Fprintf(w, "supervisor: %d notifications, %d accepted, %d left to the kernel, %d requeued, %d placement errors, %d errors, %d reloads (%d refused)\n",
		s.Notifications, s.Accepted, s.Continued, s.Requeued, s.PlacementErrors, s.Errors, s.Reloads, s.ReloadsRefused)
	fmt.Fprintf(w, "tracking %s: %d processes known, %d listening sockets, %d connections followed\n",
		s.Track, s.KnownProcesses, s.ListenerCopies, s.FollowedConnections)
	if s.NamesFound+s.NameFallbacks+s.NameTimeouts > 0 {
		fmt.Fprintf(w, "host names: %d found, %d connections without one, %d timed out waiting for one, %d keep-alive connections moved by a later request\n",
			s.NamesFound, s.NameFallbacks, s.NameTimeouts, s.Reclassified)
	}
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
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, " ")
}

func dscp(d int) string {
	if d < 0 {
		return "-"
	}
	return strconv.Itoa(d)
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
