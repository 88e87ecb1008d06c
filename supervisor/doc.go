// Package supervisor answers the seccomp notifications of the server's
// processes: it emulates accept and accept4 so that every new connection is
// classified, marked with its vhost's DSCP and handed to a process already in
// its vhost's cgroup before the server sees it.
//
// The data path, a step a line, with the file that takes it:
//
//   - receive a notification, one goroutine in NOTIF_RECV per notification
//     fd, and dispatch it by package intercept's syscall table: receive.go
//     (the kernel's structures and ioctls: notify.go)
//   - answer an accept, left to the kernel or emulated: accept.go
//   - the caller's process (pidfd, cached) and the listening socket behind
//     its fd (the supervisor's copy, one per socket): procs.go, listeners.go
//   - classify the connection by its address, or hold it until its first
//     bytes name a host: pending.go (a CGI request to mod_cgid's daemon:
//     cgid.go), from the table installed by SetClassifier (supervisor.go)
//   - apply the class's connection caps (max_connections and per
//     client): admitted, sent on to the class's alternate, or refused,
//     which the supervisor answers itself: admission.go, refuse.go
//   - mark its socket with the class's DSCP: mark.go, and with its
//     bandwidth limits (SO_MARK for egress_rate, SO_MAX_PACING_RATE for
//     connection_rate): shape.go; put the process in the class's cgroup:
//     place (supervisor.go)
//   - hand the connection over and answer: deliver, complete (accept.go),
//     handOver (track.go)
//   - follow connections after accept (track = "fork", "full"): track.go;
//     a blocking keep-alive read held until its request comes, so that
//     the request is classified before it is read: heldread.go
//
// Beside it: the event loop for what is not a notification (a listener or
// a connection becoming readable, a process exiting, deadlines): events.go;
// waking a server that polls: doorbell.go; a new table applied at once:
// reclassify.go; connection counts: counts.go; the system calls and /proc
// files underneath: kernel.go, sockdiag.go. For the keeper (vhqos run):
// every notification received and not yet answered is recorded in a
// failopen.Table (receive.go, respond; complete in accept.go), so that a
// keeper can answer it if this process dies; handoff.go gives what a
// supervisor holds to its successor (vhqos upgrade).
package supervisor
