// Package cgroup gives each class of traffic (every vhost and the defaults) a
// cgroup of its own under one vhqos subtree, sets its CPU and IO limits and
// moves the processes serving it there. It hides the difference between the
// cgroup v1 (and hybrid) layout and unified cgroup v2 behind one Manager,
// built on github.com/containerd/cgroups/v3.
package cgroup
