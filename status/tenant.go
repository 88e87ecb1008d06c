package status

import (
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/prometheus/client_golang/prometheus"
)

// Tenant is one [[tenant]] of the table with what its cgroup used: the sum
// of its sites and of the tenants inside it (the kernel counts a cgroup's
// children in it), against the tenant's own limits.
type Tenant struct {
	Name string `json:"name"`
	// Parent is the tenant this one is inside, "" for none.
	Parent string `json:"tenant,omitempty"`
	Cgroup string `json:"cgroup"`
	// Sites counts the vhosts directly inside it.
	Sites     int     `json:"sites"`
	CPUWeight uint64  `json:"cpu_weight,omitempty"`
	CPUMax    float64 `json:"cpu_max_percent,omitempty"`
	CPUUsec   uint64  `json:"cpu_usec"`
	Throttled uint64  `json:"cpu_throttled_usec"`
	// Faults counts the periods in which the tenant's cpu_max held it
	// back.
	Faults       uint64 `json:"cpu_max_faults"`
	IOReadBytes  uint64 `json:"io_read_bytes"`
	IOWriteBytes uint64 `json:"io_write_bytes"`
	// Memory and Tasks are as for a vhost (Class).
	Memory *Memory `json:"memory,omitempty"`
	Tasks  *Tasks  `json:"tasks,omitempty"`
	// EgressRate is the tenant's egress_rate in bits per second, 0 for
	// none; Egress is what its HTB class counted, the sum of what its
	// sites sent (nil without egress_rate).
	EgressRate uint64  `json:"egress_rate_bits_per_second,omitempty"`
	Egress     *Egress `json:"egress,omitempty"`
}

// writeTenants prints a line per tenant: its use of CPU, memory and tasks
// against its limits, and how often it hit them.
func (r *Report) writeTenants(w io.Writer) {
	if len(r.Tenants) == 0 {
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TENANT\tINSIDE\tSITES\tCPU s\tTHROTTLED s\tFAULTS\tCPU_MAX\tMEMORY\tMEMORY_MAX\tHIT MAX\tOOM KILLS\tTASKS\tTASKS_MAX\tFORKS REFUSED")
	for _, tn := range r.Tenants {
		inside, cpuMax := "-", "-"
		if tn.Parent != "" {
			inside = tn.Parent
		}
		if tn.CPUMax != 0 {
			cpuMax = fmt.Sprintf("%g%%", tn.CPUMax)
		}
		mem, memMax, hitMax, kills := "-", "-", "-", "-"
		if m := tn.Memory; m != nil {
			mem = bytes(m.Current)
			if m.Max != 0 {
				memMax = bytes(m.Max)
			}
			hitMax, kills = count(m.Events, "max"), count(m.Events, "oom_kill")
		}
		tasks, tasksMax, refused := "-", "-", "-"
		if t := tn.Tasks; t != nil {
			tasks, refused = fmt.Sprint(t.Current), fmt.Sprint(t.MaxEvents)
			if t.Max != 0 {
				tasksMax = fmt.Sprint(t.Max)
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%.1f\t%.1f\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			tn.Name, inside, tn.Sites, float64(tn.CPUUsec)/1e6, float64(tn.Throttled)/1e6, tn.Faults, cpuMax,
			mem, memMax, hitMax, kills, tasks, tasksMax, refused)
	}
	tw.Flush()
}

var (
	descTenantCPU       = prometheus.NewDesc("vhqos_tenant_cpu_seconds_total", "CPU time used by the tenant's cgroup: its sites and the tenants inside it.", []string{"tenant"}, nil)
	descTenantThrottled = prometheus.NewDesc("vhqos_tenant_cpu_throttled_seconds_total", "Time the tenant's processes were held back by its cpu_max.", []string{"tenant"}, nil)
	descTenantFaults    = prometheus.NewDesc("vhqos_tenant_cpu_max_faults_total", "Periods in which the tenant's cpu_max held it back.", []string{"tenant"}, nil)
	descTenantMemory    = prometheus.NewDesc("vhqos_tenant_memory_bytes", "Memory charged to the tenant's cgroup.", []string{"tenant"}, nil)
	descTenantMemEvents = prometheus.NewDesc("vhqos_tenant_memory_events_total", "Times the tenant's cgroup ran into its memory limits, by the kernel's memory.events names.", []string{"tenant", "event"}, nil)
	descTenantTasks     = prometheus.NewDesc("vhqos_tenant_tasks", "Tasks (processes and threads) in the tenant's cgroup.", []string{"tenant"}, nil)
	descTenantPidsMax   = prometheus.NewDesc("vhqos_tenant_pids_max_events_total", "Forks and clones refused inside the tenant by a tasks_max: under cgroup v2 since Linux 6.11 the kernel's count, of its own tasks_max and those of its sites and inner tenants; elsewhere (v1, v2 before 6.11 or mounted with pids_localevents) the sum of its sites' counts, every fork refused to a process of its sites.", []string{"tenant"}, nil)
)

func tenantDescs() []*prometheus.Desc {
	return []*prometheus.Desc{descTenantCPU, descTenantThrottled, descTenantFaults, descTenantMemory, descTenantMemEvents, descTenantTasks, descTenantPidsMax}
}

// collectTenants emits each tenant's series.
func collectTenants(ch chan<- prometheus.Metric, r *Report) {
	for _, tn := range r.Tenants {
		ch <- prometheus.MustNewConstMetric(descTenantCPU, prometheus.CounterValue, float64(tn.CPUUsec)/1e6, tn.Name)
		ch <- prometheus.MustNewConstMetric(descTenantThrottled, prometheus.CounterValue, float64(tn.Throttled)/1e6, tn.Name)
		ch <- prometheus.MustNewConstMetric(descTenantFaults, prometheus.CounterValue, float64(tn.Faults), tn.Name)
		if m := tn.Memory; m != nil {
			ch <- prometheus.MustNewConstMetric(descTenantMemory, prometheus.GaugeValue, float64(m.Current), tn.Name)
			for event, n := range m.Events {
				ch <- prometheus.MustNewConstMetric(descTenantMemEvents, prometheus.CounterValue, float64(n), tn.Name, event)
			}
		}
		if t := tn.Tasks; t != nil {
			ch <- prometheus.MustNewConstMetric(descTenantTasks, prometheus.GaugeValue, float64(t.Current), tn.Name)
			ch <- prometheus.MustNewConstMetric(descTenantPidsMax, prometheus.CounterValue, float64(t.MaxEvents), tn.Name)
		}
	}
}
