package status

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/vhqos/vhqos/intercept"
)

// Metrics exports the same figures as the status report, in Prometheus's
// text format, plus how long answering notifications takes.
type Metrics struct {
	registry *prometheus.Registry
	latency  *prometheus.HistogramVec
	// observers are the latency histogram's children by syscall, looked
	// up without hashing label values or taking the vector's lock:
	// Observe runs for every notification. A child is made at its first
	// use, so that only the calls a server makes show as series.
	observers map[string]*lazyObserver
	report    func() *Report
}

// lazyObserver makes its histogram child on first use.
type lazyObserver struct {
	once sync.Once
	vec  *prometheus.HistogramVec
	name string
	o    prometheus.Observer
}

func (l *lazyObserver) get() prometheus.Observer {
	l.once.Do(func() { l.o = l.vec.WithLabelValues(l.name) })
	return l.o
}

// NewMetrics makes the metrics; report is called once per scrape.
func NewMetrics(report func() *Report) *Metrics {
	m := &Metrics{
		registry: prometheus.NewRegistry(),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "vhqos_notification_duration_seconds",
			Help:    "Time the receiving thread spent answering a seccomp notification, by syscall (an accept's wait for a connection or its first bytes, and hand-overs made aside for capped classes, are not included).",
			Buckets: prometheus.ExponentialBuckets(1e-6, 2, 18), // 1 µs .. 131 ms
		}, []string{"syscall"}),
		report: report,
	}
	m.registry.MustRegister(m.latency, m)
	m.observers = map[string]*lazyObserver{"other": {vec: m.latency, name: "other"}}
	for _, name := range intercept.TrackFull.Syscalls() {
		m.observers[name] = &lazyObserver{vec: m.latency, name: name}
	}
	return m
}

// Observe records one notification's handling time; syscall is the
// syscall's name as package intercept spells it, or "other".
func (m *Metrics) Observe(syscall string, d time.Duration) {
	if o := m.observers[syscall]; o != nil {
		o.get().Observe(d.Seconds())
		return
	}
	m.latency.WithLabelValues(syscall).Observe(d.Seconds())
}

var (
	descConns      = prometheus.NewDesc("vhqos_connections_total", "Connections handed to the server, by vhost (\"default\": matched no vhost).", []string{"vhost"}, nil)
	descClassified = prometheus.NewDesc("vhqos_classifications_total", "Connections by outcome: a vhost matched (by address or host name), or fallback to the defaults.", []string{"outcome"}, nil)
	descSniffs     = prometheus.NewDesc("vhqos_host_name_sniffs_total", "Connections whose first bytes were read for a host name, by result: found, none (not HTTP/TLS, no Host/SNI, byte limit), timeout.", []string{"result"}, nil)
	descLive       = prometheus.NewDesc("vhqos_connections_live", "Established connections the server's processes hold, by vhost.", []string{"vhost"}, nil)
	descProcs      = prometheus.NewDesc("vhqos_processes", "Processes in the vhost's cgroup.", []string{"vhost"}, nil)
	descThreads    = prometheus.NewDesc("vhqos_threads", "Threads in the vhost's cgroup: those of its processes, and with placement \"thread\" the threads placed there alone while they serve its connections.", []string{"vhost"}, nil)
	descCPU        = prometheus.NewDesc("vhqos_cpu_seconds_total", "CPU time used by the vhost's cgroup.", []string{"vhost"}, nil)
	descThrottled  = prometheus.NewDesc("vhqos_cpu_throttled_seconds_total", "Time the vhost's processes were held back by cpu_max.", []string{"vhost"}, nil)
	descFaults     = prometheus.NewDesc("vhqos_cpu_throttled_periods_total", "Scheduler periods in which cpu_max held the vhost back (its faults).", []string{"vhost"}, nil)
	descIORead     = prometheus.NewDesc("vhqos_io_read_bytes_total", "Bytes the vhost's cgroup read from block devices.", []string{"vhost"}, nil)
	descIOWrite    = prometheus.NewDesc("vhqos_io_written_bytes_total", "Bytes the vhost's cgroup wrote to block devices.", []string{"vhost"}, nil)
	descReloads    = prometheus.NewDesc("vhqos_reloads_total", "QoS table reloads, by result.", []string{"result"}, nil)
	descGeneration = prometheus.NewDesc("vhqos_table_generation", "How many times a new QoS table was applied since start.", nil, nil)
	descRefused    = prometheus.NewDesc("vhqos_table_refused", "1 while the QoS table file holds a table vhqos refused (the one before stays in force), 0 once a table from the file is in force; path is the file.", []string{"path"}, nil)
	descErrors     = prometheus.NewDesc("vhqos_supervisor_errors_total", "Errors of the supervisor, by kind.", []string{"kind"}, nil)

	descRestarts        = prometheus.NewDesc("vhqos_supervisor_restarts_total", "Supervisors the keeper started again after one crashed (upgrades not counted).", nil, nil)
	descUpgrades        = prometheus.NewDesc("vhqos_supervisor_upgrades_total", "Supervisors replaced by vhqos upgrade.", nil, nil)
	descFailedOpenNotes = prometheus.NewDesc("vhqos_failed_open_notifications_total", "Notifications the keeper answered \"continue\" (the kernel made the call, without QoS) because no supervisor was running.", nil, nil)
	descFailedOpenTime  = prometheus.NewDesc("vhqos_failed_open_seconds_total", "Time no supervisor was running, in which the keeper failed open.", nil, nil)
	descLost            = prometheus.NewDesc("vhqos_connections_lost_total", "Connections a crashed supervisor had accepted but not yet handed to the server, lost with it (an upper bound).", nil, nil)
	descAdmissions      = prometheus.NewDesc("vhqos_admissions_total", "Connections of a vhost with a connection cap, by what the cap decided: admitted, sent to the over_limit class (alternate), refused.", []string{"vhost", "outcome"}, nil)
	descLimit           = prometheus.NewDesc("vhqos_connections_limit", "The vhost's max_connections (vhosts with one only).", []string{"vhost"}, nil)
	descLimitPerIP      = prometheus.NewDesc("vhqos_connections_per_ip_limit", "The vhost's max_connections_per_ip (vhosts with one only).", []string{"vhost"}, nil)
	descOpen            = prometheus.NewDesc("vhqos_connections_open", "Connections counted against the vhost's connection caps now: admitted and held open by the server (vhosts with a cap only).", []string{"vhost"}, nil)
	descBuildInfo       = prometheus.NewDesc("vhqos_build_info", "Always 1; labels: the part of vhqos (keeper, supervisor) and the version of its binary. A part whose version is unknown has no series.", []string{"part", "version"}, nil)
)

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descConns, descClassified, descLive, descProcs, descThreads, descCPU, descThrottled, descFaults, descIORead, descIOWrite, descReloads, descGeneration, descRefused, descErrors, descSniffs,
		descRestarts, descUpgrades, descFailedOpenNotes, descFailedOpenTime, descLost, descBuildInfo,
		descAdmissions, descLimit, descLimitPerIP, descOpen} {
		ch <- d
	}
	for _, d := range memoryTaskDescs() {
		ch <- d
	}
	for _, d := range tenantDescs() {
		ch <- d
	}
	for _, d := range bandwidthDescs() {
		ch <- d
	}
	for _, d := range placementDescs() {
		ch <- d
	}
}

// Collect implements prometheus.Collector from one fresh report.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	r := m.report()
	var byAddress, fallback float64
	for _, c := range r.Classes {
		counter := func(d *prometheus.Desc, v float64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, c.Name)
		}
		gauge := func(d *prometheus.Desc, v float64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, c.Name)
		}
		counter(descConns, float64(c.Connections))
		gauge(descLive, float64(c.Live))
		gauge(descProcs, float64(len(c.PIDs)))
		gauge(descThreads, float64(c.Threads))
		counter(descCPU, float64(c.CPUUsec)/1e6)
		counter(descThrottled, float64(c.Throttled)/1e6)
		counter(descFaults, float64(c.Faults))
		counter(descIORead, float64(c.IOReadBytes))
		counter(descIOWrite, float64(c.IOWriteBytes))
		collectMemoryTasks(ch, c)
		collectBandwidth(ch, c)
		if a := c.Admission; a != nil {
			ch <- prometheus.MustNewConstMetric(descAdmissions, prometheus.CounterValue, float64(a.Admitted), c.Name, "admitted")
			ch <- prometheus.MustNewConstMetric(descAdmissions, prometheus.CounterValue, float64(a.Alternate), c.Name, "alternate")
			ch <- prometheus.MustNewConstMetric(descAdmissions, prometheus.CounterValue, float64(a.Refused), c.Name, "refused")
			gauge(descOpen, float64(a.Open))
			if a.MaxConnections > 0 {
				gauge(descLimit, float64(a.MaxConnections))
			}
			if a.MaxConnectionsPerIP > 0 {
				gauge(descLimitPerIP, float64(a.MaxConnectionsPerIP))
			}
		}
		if c.Default {
			fallback += float64(c.Connections)
		} else {
			byAddress += float64(c.Connections)
		}
	}
	collectTenants(ch, r)
	collectPlacement(ch, r)
	ch <- prometheus.MustNewConstMetric(descClassified, prometheus.CounterValue, byAddress, "vhost")
	ch <- prometheus.MustNewConstMetric(descSniffs, prometheus.CounterValue, float64(r.Supervisor.NamesFound), "found")
	ch <- prometheus.MustNewConstMetric(descSniffs, prometheus.CounterValue, float64(r.Supervisor.NameFallbacks), "none")
	ch <- prometheus.MustNewConstMetric(descSniffs, prometheus.CounterValue, float64(r.Supervisor.NameTimeouts), "timeout")
	ch <- prometheus.MustNewConstMetric(descClassified, prometheus.CounterValue, fallback, "fallback")
	ch <- prometheus.MustNewConstMetric(descReloads, prometheus.CounterValue, float64(r.Supervisor.Reloads), "applied")
	ch <- prometheus.MustNewConstMetric(descReloads, prometheus.CounterValue, float64(r.Supervisor.ReloadsRefused), "refused")
	ch <- prometheus.MustNewConstMetric(descGeneration, prometheus.GaugeValue, float64(r.Generation))
	refused := 0.0
	if r.TableRefused {
		refused = 1
	}
	ch <- prometheus.MustNewConstMetric(descRefused, prometheus.GaugeValue, refused, r.Config)
	ch <- prometheus.MustNewConstMetric(descErrors, prometheus.CounterValue, float64(r.Supervisor.PlacementErrors), "placement")
	ch <- prometheus.MustNewConstMetric(descErrors, prometheus.CounterValue, float64(r.Supervisor.Errors), "other")
	ch <- prometheus.MustNewConstMetric(descRestarts, prometheus.CounterValue, float64(r.SupervisorRestarts))
	ch <- prometheus.MustNewConstMetric(descUpgrades, prometheus.CounterValue, float64(r.Upgrades))
	ch <- prometheus.MustNewConstMetric(descFailedOpenNotes, prometheus.CounterValue, float64(r.FailedOpenNotifications))
	ch <- prometheus.MustNewConstMetric(descFailedOpenTime, prometheus.CounterValue, r.FailedOpen.Seconds())
	ch <- prometheus.MustNewConstMetric(descLost, prometheus.CounterValue, float64(r.LostConnections))
	for _, p := range []struct{ part, version string }{{"keeper", r.KeeperVersion}, {"supervisor", r.SupervisorVersion}} {
		if p.version != "" {
			ch <- prometheus.MustNewConstMetric(descBuildInfo, prometheus.GaugeValue, 1, p.part, p.version)
		}
	}
}

// ListenAddr completes a metrics address: a bare ":port" means loopback,
// so metrics are never exposed to the network by accident.
func ListenAddr(addr string) string {
	if host, port, err := net.SplitHostPort(addr); err == nil && host == "" {
		return net.JoinHostPort("127.0.0.1", port)
	}
	return addr
}

// Listen opens the metrics address; done before the server starts, so a
// taken port stops vhqos before anything else happens.
func ListenMetrics(addr string) (net.Listener, error) {
	l, err := net.Listen("tcp", ListenAddr(addr))
	if err != nil {
		return nil, fmt.Errorf("opening the metrics address %s: %w", addr, err)
	}
	return l, nil
}

// Serve exports the metrics at /metrics on l until ctx is done.
func (m *Metrics) Serve(ctx context.Context, l net.Listener, log *slog.Logger) {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	log.Info("serving metrics", "address", "http://"+l.Addr().String()+"/metrics")
	// The listener may be closed under Serve at exit (the keeper holds
	// it): that is a stop, not an error.
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
		log.Error("metrics server", "err", err)
	}
}
