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
	if !m.v2.inner[group] {
		m.v2.inner[group] = true
	}
	dir := m.hier[0].dir(m.name, group)
	for c, on := range m.v2.enabled {
		if on {
			if err := enableIn(dir, c); err != nil {
				return fmt.Errorf("cgroups: handing the %s controller down from %s: %w", c, group, err)
			}
		}
	}
	return nil
}

// innerDirs lists the directories of the groups that have children, the
// outer ones first: enableControllers writes a new controller into their
// cgroup.subtree_control after the chain's.
func (m *Manager) innerDirs() []string {
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
	dirs := make([]string, len(groups))
	for i, g := range groups {
		dirs[i] = m.hier[0].dir(m.name, g)
	}
	return dirs
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
