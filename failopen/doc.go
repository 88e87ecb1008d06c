// Package failopen is what keeps a server running while no supervisor
// answers its seccomp notifications: the keeper process (vhqos run) uses it
// when the supervisor process has died and until a new one takes over.
//
// Two things are needed for that, and nothing else:
//
//   - Table, a record of the notifications the supervisor received and has
//     not answered yet, kept in memory shared with the keeper (a memfd the
//     keeper made). The supervisor is its only writer; the keeper reads it
//     only once the supervisor is dead, so no locking is needed. Without it
//     a thread of the server that the dead supervisor had received a
//     notification for would wait in its syscall for ever: the kernel
//     answers a received notification only when every copy of the
//     notification fd is closed, and the keeper keeps one open.
//   - Continue and Serve, which answer notifications with
//     SECCOMP_USER_NOTIF_FLAG_CONTINUE: the kernel runs the syscall as if
//     there were no filter (seccomp_unotify(2)). The server serves without
//     QoS for that moment, which beats an outage.
//
// The package is small on purpose: the keeper must be simple enough to
// trust, so it parses no table, classifies nothing and sniffs nothing.
package failopen
