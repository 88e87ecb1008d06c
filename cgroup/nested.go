package cgroup

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
)

// Nested groups: a tenant's group is the parent of its sites' groups
// ("tenant-acme/vhost-shop"), so that the kernel bounds the sites together
// by the tenant's limits. A group is named by its path below the subtree;
// its parent group must have been Set first. Processes are placed in
// leaves only: under cgroup v2 a group that hands controllers to its
// children may hold none (the "no internal processes" rule), and vhqos
// never places a process in a tenant's group.

// validGroup accepts a group name: one or more valid names (validName)
// joined by "/".
func validGroup(name string) error {
	if name == "" {
		return errors.New("empty cgroup name")
	}
	for _, part := range strings.Split(name, "/") {
		if err := validName(part); err != nil {
			return err
		}
	}
	return nil
}

// parentGroup is the group name is inside, "" for a group directly under
// the subtree.
func parentGroup(name string) string {
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		return name[:i]
	}
	return ""
}

// checkParent returns an error unless name's parent group, if it has one,
// exists. Called with m.mu held.
func (m *Manager) checkParent(name string) error {
	parent := parentGroup(name)
	if parent == "" {
		return nil
	}
	if m.groups[parent] == nil {
		return fmt.Errorf("cgroups: creating %s: its parent group %s does not exist (Set the parent first)", name, parent)
	}
	return nil
}

// handDown makes group (a tenant's) hand every controller enabled so far to
// its children, as each level of the chain above it does (v2 only; under
// v1 every hierarchy is hierarchical already). Called with m.mu held,
// before a child of group is made.
func (m *Manager) handDown(group string) error {
	if m.version != 2 || group == "" {
		return nil
	}
	if m.v2.inner == nil {
		m.v2.inner = map[string]bool{}
	}
	m.v2.inner[group] = true
	dir := m.hier[0].dir(m.name, group)
	for c, on := range m.v2.enabled {
		if on {
			if err := enableIn(dir, c); err != nil {
				return fmt.Errorf("cgroups: handing the %s controller down from %s: %w", c, group, err)
			}
		}
	}
	if g := m.groups[group]; g != nil && g.twin != nil {
		for _, c := range threadedControllers() {
			if m.v2.enabled[c] {
				if err := enableIn(g.twin.dir, c); err != nil {
					return fmt.Errorf("cgroups: handing the %s controller down from the threaded twin of %s: %w", c, group, err)
				}
			}
		}
	}
	return nil
}

// innerDirs lists the directories of the groups that have children, the
// outer ones first: enableControllers writes a new controller into their
// cgroup.subtree_control after the chain's.
func (m *Manager) innerDirs() []string {
	groups := m.innerGroups()
	dirs := make([]string, len(groups))
	for i, g := range groups {
		dirs[i] = m.hier[0].dir(m.name, g)
	}
	return dirs
}

// innerGroups lists the groups that have children, the outer ones first.
func (m *Manager) innerGroups() []string {
	var groups []string
	for g := range m.v2.inner {
		if m.groups[g] != nil {
			groups = append(groups, g)
		}
	}
	slices.SortFunc(groups, func(a, b string) int {
		if d := strings.Count(a, "/") - strings.Count(b, "/"); d != 0 {
			return d
		}
		return strings.Compare(a, b)
	})
	return groups
}

// enableIn lists controller c in dir's cgroup.subtree_control if it is not
// there yet.
func enableIn(dir, c string) error {
	file := filepath.Join(dir, "cgroup.subtree_control")
	on, err := readWords(file)
	if err != nil {
		return fmt.Errorf("reading %s: %w", file, err)
	}
	if slices.Contains(on, c) {
		return nil
	}
	return writeFile(file, "+"+c)
}

// hasChildren reports whether group has child groups in the manager's
// table. Called with m.mu held.
func (m *Manager) hasChildren(group string) bool {
	prefix := group + "/"
	for name := range m.groups {
		if strings.HasPrefix(name, prefix) {
			return true
		}
	}
	return false
}

// groupsBelow lists the groups under dir (the subtree's directory in the
// first hierarchy), as names relative to it, each parent before its
// children: an attached manager adopts them in that order.
func groupsBelow(dir string) ([]string, error) {
	var out []string
	var walk func(rel string) error
	walk = func(rel string) error {
		entries, err := os.ReadDir(filepath.Join(dir, rel))
		if err != nil {
			return err
		}
		for _, e := range entries {
			if !e.IsDir() || validName(e.Name()) != nil {
				continue
			}
			name := path.Join(rel, e.Name())
			out = append(out, name)
			if err := walk(name); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(""); err != nil {
		return nil, err
	}
	return out, nil
}

// CPU quotas of nested groups under cgroup v1: CFS refuses a group's
// cpu.cfs_quota_us above its parent's (EINVAL; tg_cfs_schedulable_down in
// kernel/sched/core.c), where v2 takes any cpu.max and lets the parent
// bound the child. So under v1 a group's quota is written as the smallest
// of its own and its ancestors' (the bound in effect is the same), and
// when a parent's quota goes down its descendants' go down first. A group
// with no quota of its own is left without one: CFS then bounds it by its
// parent's.

// setNested gives g the limits r (Set), keeping the quotas of g and the
// groups inside it acceptable to cgroup v1 at every step. Called with
// m.mu held.
func (m *Manager) setNested(g *group, r Resources) error {
	g.want, g.wantSet = r, true
	if m.version != 1 {
		return m.update(g, r)
	}
	inside := m.subtreeOf(g.name) // g and its descendants, outer first
	// Deepest first: nothing may stay above the quota its parent gets. A
	// group not Set yet (adopted from a predecessor) is bounded by its
	// ancestors alone; the table's Set of it follows.
	for i := len(inside) - 1; i >= 0; i-- {
		d := inside[i]
		eff := m.effectiveQuota(d)
		if !d.wantSet {
			eff = m.ancestorQuota(d.name)
		}
		if d.quota > 0 && eff > 0 && d.quota > eff {
			if err := m.update(d, withQuota(d.want, eff)); err != nil {
				return err
			}
		}
	}
	// Outer first: each may now rise as far as its parent lets it.
	for _, d := range inside {
		if d.wantSet {
			if err := m.update(d, withQuota(d.want, m.effectiveQuota(d))); err != nil {
				return err
			}
		}
	}
	return nil
}

// subtreeOf lists the groups that are name or inside it, outer ones first.
// Called with m.mu held.
func (m *Manager) subtreeOf(name string) []*group {
	var out []*group
	for n, g := range m.groups {
		if n == name || strings.HasPrefix(n, name+"/") {
			out = append(out, g)
		}
	}
	slices.SortFunc(out, func(a, b *group) int {
		if d := strings.Count(a.name, "/") - strings.Count(b.name, "/"); d != 0 {
			return d
		}
		return strings.Compare(a.name, b.name)
	})
	return out
}

// effectiveQuota is the CPU quota (percent) to write for g under v1: its
// own, lowered to the smallest of its ancestors'; 0 when it has none of
// its own. Called with m.mu held.
func (m *Manager) effectiveQuota(g *group) float64 {
	q := g.want.CPUQuotaPercent
	if q == 0 {
		return 0
	}
	if a := m.ancestorQuota(g.name); a > 0 {
		q = min(q, a)
	}
	return q
}

// ancestorQuota is the smallest quota the groups name is inside ask for, 0
// for none. Called with m.mu held.
func (m *Manager) ancestorQuota(name string) float64 {
	q := 0.0
	for p := parentGroup(name); p != ""; p = parentGroup(p) {
		if a := m.groups[p]; a != nil && a.wantSet && a.want.CPUQuotaPercent > 0 && (q == 0 || a.want.CPUQuotaPercent < q) {
			q = a.want.CPUQuotaPercent
		}
	}
	return q
}

func withQuota(r Resources, q float64) Resources {
	r.CPUQuotaPercent = q
	return r
}
