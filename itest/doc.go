// Package itest holds the integration tests: real servers from Debian
// packages run under vhqos inside network namespaces the tests make, on the
// host's kernel and, through itest/vm, on a VM with unified cgroup v2.
package itest
