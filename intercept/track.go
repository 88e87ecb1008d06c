package intercept

import "fmt"

// Track says how far the supervisor follows connections after accept. The
// filter is fixed when the server starts, so this is chosen once, in the
// QoS table's [settings] track.
type Track int

const (
	// TrackAccept intercepts accept and accept4 only: the accepting
	// process serves (prefork servers). A child forked after an accept is
	// born in its parent's cgroup.
	TrackAccept Track = iota
	// TrackFork intercepts what TrackAccept does, but follows every
	// connection (every accept is emulated, the socket recorded): the
	// accepting parent is in the connection's class when it forks, so
	// the child is born there, and a process that holds no connection any
	// more goes home when it next waits in accept, or within a second
	// (the sweep, for servers that poll before they accept). For servers
	// that accept in a parent and fork a child per connection: inetd,
	// socat fork, busybox httpd. What a process holds is read from
	// /proc/PID/fd when it matters. Process creation itself is not
	// intercepted: a fork that waited for the supervisor could fail with
	// EINTR in a server whose SIGCHLD handler lacks SA_RESTART (socat),
	// where natively it never does.
	TrackFork
	// TrackFull also intercepts process creation, the dup family, close
	// and the read family (the tables and read wrapper of
	// docs/design-notes.md, "Following connections through fork"): a
	// process goes home the moment it closes its last connection, one
	// holding connections of several vhosts follows the one it reads
	// from, a child forked holding several is born home and placed at its
	// first read, and keep-alive requests for another vhost move their
	// connection. Every close and read costs a notification, and each of
	// these calls can fail with EINTR when a signal whose handler lacks
	// SA_RESTART arrives while the supervisor decides.
	TrackFull
)

// ParseTrack reads a tracking mode as the QoS table writes it.
func ParseTrack(s string) (Track, error) {
	switch s {
	case "", "accept":
		return TrackAccept, nil
	case "fork":
		return TrackFork, nil
	case "full":
		return TrackFull, nil
	}
	return 0, fmt.Errorf("unknown tracking mode %q: use accept, fork or full", s)
}

func (t Track) String() string {
	return [...]string{"accept", "fork", "full"}[t]
}

// Syscalls lists what the filter must send to the supervisor for mode t,
// in the order of the table.
func (t Track) Syscalls() []string { return Syscalls(t, PlaceProcess) }
