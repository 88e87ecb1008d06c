// Package shim starts the server under vhqos. The supervisor re-executes its
// own binary as the shim; the shim installs the seccomp user-notification
// filter, hands the notification fd to the supervisor, waits until the
// supervisor has placed it, and execs the server, which never knows.
package shim
