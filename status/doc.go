// Package status is how operators see a running vhqos: the supervisor
// serves a Report on a unix socket only root may use, and `vhqos status`
// fetches it and prints it as a table per vhost, as JSON for scripts, or
// refreshed like top.
package status
