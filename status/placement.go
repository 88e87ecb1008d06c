package status

import "github.com/prometheus/client_golang/prometheus"

// The metrics of placement: what a multi-threaded server means for it.
var (
	descMultiThreaded = prometheus.NewDesc("vhqos_multi_threaded_processes_total",
		"Server processes seen with more than one thread: never moved into a vhost's cgroup as a whole.", nil, nil)
	descUnplaced = prometheus.NewDesc("vhqos_unplaced_connections_total",
		"Connections served outside their vhost's cgroup because a multi-threaded process took them under placement = \"process\".", nil, nil)
	descThreadMoves = prometheus.NewDesc("vhqos_thread_placements_total",
		"Moves of a single server thread into the cgroup of the connection it reads, or home (placement = \"thread\").", nil, nil)
)

func placementDescs() []*prometheus.Desc {
	return []*prometheus.Desc{descMultiThreaded, descUnplaced, descThreadMoves}
}

func collectPlacement(ch chan<- prometheus.Metric, r *Report) {
	s := r.Supervisor
	ch <- prometheus.MustNewConstMetric(descMultiThreaded, prometheus.CounterValue, float64(s.MultiThreadedProcesses))
	ch <- prometheus.MustNewConstMetric(descUnplaced, prometheus.CounterValue, float64(s.UnplacedMultiThreaded))
	ch <- prometheus.MustNewConstMetric(descThreadMoves, prometheus.CounterValue, float64(s.ThreadPlacements))
}
