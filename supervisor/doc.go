// Package supervisor answers the seccomp notifications of the server's
// processes: it emulates accept and accept4 so that every new connection is
// classified, marked with its vhost's DSCP and handed to a process already in
// its vhost's cgroup before the server sees it.
package supervisor
