package cgroup

import "strings"

// The groups of a Manager's subtree are named here and only here: the
// supervisor places processes by these names, the command line derives a
// class's group from them, and the QoS table's reader refuses vhost names
// that would read like one of them.

// HomeGroup holds the server's processes that serve no connection: the
// server as it starts, a process waiting in an accept vhqos emulates, and
// (with track = "full") a process once it closed its last connection. New
// creates it; it cannot be removed, and Remove moves a group's processes
// here.
const HomeGroup = "home"

// DefaultGroup holds the processes serving connections that match no vhost
// of the QoS table; it carries the table's [defaults] limits.
const DefaultGroup = "default"

// vhostPrefix starts every vhost's group, so that no name an operator
// picks can collide with HomeGroup, DefaultGroup or a cgroup interface file
// (cpu.max, cgroup.procs...).
const vhostPrefix = "vhost-"

// tenantPrefix starts every tenant's group, as vhostPrefix a vhost's.
const tenantPrefix = "tenant-"

// supervisorLeaf ends the name of the cgroup v2 leaf the supervisor moves
// into, beside its subtree (Name + "." + supervisorLeaf).
const supervisorLeaf = "supervisor"

// VHostGroup returns the group of the vhost named name, "vhost-" + name: the
// directory under the subtree where the processes serving that vhost's
// connections sit. It does not check name; Set and Place refuse a name that
// is no valid cgroup directory.
func VHostGroup(name string) string { return vhostPrefix + name }

// TenantGroup returns the group of the tenant named name, "tenant-" +
// name: the parent directory of its sites' groups (and of the tenants
// inside it), whose limits bound them together. A nested group is named by
// its path below the subtree, "tenant-acme/vhost-shop".
func TenantGroup(name string) string { return tenantPrefix + name }

// ReservedNames returns the names vhqos gives its own cgroups, in the order
// messages list them: DefaultGroup, HomeGroup and the supervisor's leaf.
func ReservedNames() []string { return []string{DefaultGroup, HomeGroup, supervisorLeaf} }

// Reserved reports whether name, ignoring case, is one of ReservedNames.
// VHostGroup's prefix already keeps vhost groups apart from these on disk;
// the QoS table refuses them as vhost names as well, so that no vhost reads
// like one of vhqos's own groups in status output and in the cgroup tree.
func Reserved(name string) bool {
	return strings.EqualFold(name, DefaultGroup) || strings.EqualFold(name, HomeGroup) || strings.EqualFold(name, supervisorLeaf)
}
