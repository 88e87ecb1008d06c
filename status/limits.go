package status

import (
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"

	"github.com/prometheus/client_golang/prometheus"
)

// Memory is a class's memory limits (memory_max, memory_high), the memory
// charged to its cgroup now, and the kernel's counts of the times the
// class ran into its limits: its memory faults.
type Memory struct {
	// Max and High are memory_max and memory_high in bytes; 0 is no limit.
	Max  uint64 `json:"max_bytes,omitempty"`
	High uint64 `json:"high_bytes,omitempty"`
	// Current is the memory charged to the class's cgroup, page cache
	// included (v2 memory.current, v1 memory.usage_in_bytes).
	Current uint64 `json:"current_bytes"`
	// Events are by the names of cgroup v2's memory.events: "high" (over
	// memory_high: throttled and reclaimed), "max" (an allocation hit
	// memory_max), "oom" (reclaim could not make room under memory_max)
	// and "oom_kill" (the kernel's OOM killer killed a process of the
	// class). Under cgroup v1 only "max" (memory.failcnt) and "oom_kill"
	// (memory.oom_control) are counted, and the other keys are absent.
	Events map[string]uint64 `json:"events"`
}

// Tasks is a class's tasks_max, the tasks (processes and threads) in its
// cgroup now, and how many forks and clones a tasks_max refused.
type Tasks struct {
	Max     uint64 `json:"max,omitempty"`
	Current uint64 `json:"current"`
	// MaxEvents counts the refused forks and clones where the kernel
	// counts them (pids.events "max"). Under cgroup v1, and v2 before
	// Linux 6.11 or mounted with pids_localevents, that is the cgroup of
	// the process that forked: a vhost's count includes the forks its
	// tenant's tasks_max refused it, and a tenant's count, which the
	// kernel leaves at 0 there, is the sum of its sites'. Under v2 since
	// 6.11 it is the cgroup whose tasks_max refused and those around it:
	// a vhost counts the refusals of its own tasks_max, a tenant those of
	// its own and of the sites and tenants inside it.
	MaxEvents uint64 `json:"max_events"`
}

// limited says whether the class has a memory or task limit, or ran into
// one (a limit removed by a reload keeps its counts).
func (c Class) limited() bool {
	if m := c.Memory; m != nil {
		if m.Max != 0 || m.High != 0 {
			return true
		}
		for _, n := range m.Events {
			if n != 0 {
				return true
			}
		}
	}
	return c.Tasks != nil && (c.Tasks.Max != 0 || c.Tasks.MaxEvents != 0)
}

// writeMemoryTasks prints a line per class with a memory or task limit:
// its memory and tasks against the limits, and how often it hit them.
// "-" is a figure this kernel does not count (v1 has no memory.high).
func (r *Report) writeMemoryTasks(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	header := false
	for _, c := range r.Classes {
		if !c.limited() {
			continue
		}
		if !header {
			fmt.Fprintln(tw, "LIMITED VHOST\tMEMORY\tMEMORY_MAX\tMEMORY_HIGH\tHIT MAX\tHIT HIGH\tOOM KILLS\tTASKS\tTASKS_MAX\tFORKS REFUSED")
			header = true
		}
		mem, memMax, memHigh, hitMax, hitHigh, kills := "-", "-", "-", "-", "-", "-"
		if m := c.Memory; m != nil {
			mem = bytes(m.Current)
			if m.Max != 0 {
				memMax = bytes(m.Max)
			}
			if m.High != 0 {
				memHigh = bytes(m.High)
			}
			hitMax, hitHigh, kills = count(m.Events, "max"), count(m.Events, "high"), count(m.Events, "oom_kill")
		}
		tasks, tasksMax, refused := "-", "-", "-"
		if t := c.Tasks; t != nil {
			tasks, refused = strconv.FormatUint(t.Current, 10), strconv.FormatUint(t.MaxEvents, 10)
			if t.Max != 0 {
				tasksMax = strconv.FormatUint(t.Max, 10)
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", c.Name, mem, memMax, memHigh, hitMax, hitHigh, kills, tasks, tasksMax, refused)
	}
	tw.Flush()
}

func count(events map[string]uint64, key string) string {
	if n, ok := events[key]; ok {
		return strconv.FormatUint(n, 10)
	}
	return "-"
}

// memoryTaskLimits adds the memory and task limits to a LIMITS column.
func (c Class) memoryTaskLimits(parts []string) []string {
	if m := c.Memory; m != nil && m.Max != 0 {
		parts = append(parts, "memory_max="+bytes(m.Max))
	}
	if m := c.Memory; m != nil && m.High != 0 {
		parts = append(parts, "memory_high="+bytes(m.High))
	}
	if t := c.Tasks; t != nil && t.Max != 0 {
		parts = append(parts, "tasks_max="+strconv.FormatUint(t.Max, 10))
	}
	return parts
}

var (
	descMemory       = prometheus.NewDesc("vhqos_memory_bytes", "Memory charged to the vhost's cgroup, page cache included (where the kernel accounts it).", []string{"vhost"}, nil)
	descMemoryLimit  = prometheus.NewDesc("vhqos_memory_limit_bytes", "The vhost's memory limits, by limit: max (memory_max), high (memory_high); vhosts with one only.", []string{"vhost", "limit"}, nil)
	descMemoryEvents = prometheus.NewDesc("vhqos_memory_events_total", "Times the vhost ran into its memory limits, by the kernel's event (cgroup v2 memory.events: high, max, oom, oom_kill; v1 counts max, from memory.failcnt, and oom_kill only).", []string{"vhost", "event"}, nil)
	descTasks        = prometheus.NewDesc("vhqos_tasks", "Tasks (processes and threads) in the vhost's cgroup (where the kernel counts them).", []string{"vhost"}, nil)
	descTasksLimit   = prometheus.NewDesc("vhqos_tasks_limit", "The vhost's tasks_max (vhosts with one only).", []string{"vhost"}, nil)
	descPidsMax      = prometheus.NewDesc("vhqos_pids_max_events_total", "Forks and clones refused by a tasks_max (pids.events max). Where the kernel counts a refusal in the cgroup of the process that forked (cgroup v1; v2 before Linux 6.11 or mounted with pids_localevents), those of the vhost's processes, its tenant's tasks_max refusing them included; elsewhere those its own tasks_max refused.", []string{"vhost"}, nil)
)

// memoryTaskDescs are the descriptions collectMemoryTasks uses.
func memoryTaskDescs() []*prometheus.Desc {
	return []*prometheus.Desc{descMemory, descMemoryLimit, descMemoryEvents, descTasks, descTasksLimit, descPidsMax}
}

// collectMemoryTasks exports one class's memory and task figures.
func collectMemoryTasks(ch chan<- prometheus.Metric, c Class) {
	if m := c.Memory; m != nil {
		ch <- prometheus.MustNewConstMetric(descMemory, prometheus.GaugeValue, float64(m.Current), c.Name)
		if m.Max != 0 {
			ch <- prometheus.MustNewConstMetric(descMemoryLimit, prometheus.GaugeValue, float64(m.Max), c.Name, "max")
		}
		if m.High != 0 {
			ch <- prometheus.MustNewConstMetric(descMemoryLimit, prometheus.GaugeValue, float64(m.High), c.Name, "high")
		}
		for event, n := range m.Events {
			ch <- prometheus.MustNewConstMetric(descMemoryEvents, prometheus.CounterValue, float64(n), c.Name, event)
		}
	}
	if t := c.Tasks; t != nil {
		ch <- prometheus.MustNewConstMetric(descTasks, prometheus.GaugeValue, float64(t.Current), c.Name)
		if t.Max != 0 {
			ch <- prometheus.MustNewConstMetric(descTasksLimit, prometheus.GaugeValue, float64(t.Max), c.Name)
		}
		ch <- prometheus.MustNewConstMetric(descPidsMax, prometheus.CounterValue, float64(t.MaxEvents), c.Name)
	}
}
