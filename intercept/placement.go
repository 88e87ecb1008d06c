package intercept

import "fmt"

// Placement says what the supervisor moves into a connection's cgroup: the
// process that serves it, or, for multi-threaded servers, the thread that
// reads it. It is chosen once, in the QoS table's [settings] placement, and
// fixed with the filter when the server starts.
type Placement int

const (
	// PlaceProcess moves the serving process. A process with more than
	// one thread is never moved into a vhost's cgroup, since writing one
	// thread's id to cgroup.procs moves them all, and its other threads
	// serve other connections.
	PlaceProcess Placement = iota
	// PlaceThread also intercepts the read family: the thread of a
	// multi-threaded process that reads a connection is moved into the
	// connection's cgroup (cgroup v1: tasks; v2: a threaded subtree, which
	// carries cpu and pids only), and goes home when it is idle or its
	// connection is gone. Single-threaded processes are placed as under
	// PlaceProcess. Every read of the server costs a notification.
	PlaceThread
)

// ParsePlacement reads a placement as the QoS table writes it.
func ParsePlacement(s string) (Placement, error) {
	switch s {
	case "", "process":
		return PlaceProcess, nil
	case "thread":
		return PlaceThread, nil
	}
	return 0, fmt.Errorf("unknown placement %q: use process or thread", s)
}

func (p Placement) String() string {
	return [...]string{"process", "thread"}[p]
}

// Syscalls lists what the filter must send to the supervisor for tracking
// mode t with placement p, in the order of the table.
func Syscalls(t Track, p Placement) []string {
	var list []string
	for _, sc := range &table {
		if sc.Track <= t || (p == PlaceThread && sc.Thread) {
			list = append(list, sc.Name)
		}
	}
	return list
}
