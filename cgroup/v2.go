package cgroup

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/containerd/cgroups/v3"
	"golang.org/x/sys/unix"
)

// Under unified cgroup v2 a cgroup whose cgroup.subtree_control hands
// controllers to its children may hold no processes itself (the root
// excepted). vhqos's groups are leaves under Parent/Name, and controllers
// are enabled lazily, when a group's limits first need them, on every level
// from base down to Parent/Name. base is Parent, or, when Parent does not
// exist yet, its deepest existing ancestor (the directories below it are
// vhqos's and go away on Close).
//
// When the supervisor itself sits in base (the default: Parent "" is the
// supervisor's own cgroup, as under systemd's Delegate=yes) and base is not
// the root, the supervisor moves into the leaf base/<Name>.supervisor, next
// to Parent/Name rather than inside it: then everything in Parent/Name is
// the server's, cgroup.kill on it can never hit the supervisor, and the
// supervisor competes with the server as a whole instead of with each vhost.
// Other processes in base make New fail: they are not vhqos's to move.
//
// An attached manager (Options.Attach) moves nothing: it sits where the
// owner started it, in the owner's leaf or cgroup. It enables controllers
// along the same chain as the owner, which it learns from the mark
// (baseXattr) the owner leaves on Parent/Name when it had to create Parent;
// the owner's Close gives back what either enabled, since an attached
// Close leaves the controllers alone.
type v2state struct {
	base    string          // directory of base
	initial []string        // base's cgroup.subtree_control when the owner's New began
	chain   []string        // directories whose cgroup.subtree_control must list our controllers, top-down
	enabled map[string]bool // controllers enabled along the whole chain
	undo    []subtreeEdit   // what vhqos enabled, in order
	leaf    string          // the supervisor's leaf, if it moved
	origin  string          // where it was before
	// inner holds the groups with groups inside them (tenants, nested.go),
	// whose cgroup.subtree_control hands our controllers down too.
	inner map[string]bool
}

type subtreeEdit struct{ dir, ctrl string }

// baseXattr names the extended attribute on Parent/Name in which the owner
// records base (as a cgroup path) when base is not Parent, i.e. when New
// created Parent: an attached manager cannot tell the directories New
// created from those that were there before.
const baseXattr = "user.vhqos.base"

func (m *Manager) initV2(ctx context.Context, parent, mount string) error {
	leaf := ""
	if m.attached {
		leaf = m.name + "." + supervisorLeaf
	}
	if err := m.findV2(parent, mount, leaf); err != nil {
		return err
	}
	if m.attached {
		return m.attachV2()
	}
	h := m.hier[0]
	if err := m.prepareSubtree(ctx); err != nil {
		return err
	}
	base := h.parent
	for base != "/" {
		if _, err := os.Stat(filepath.Join(mount, base)); err == nil {
			break
		}
		base = path.Dir(base)
	}
	m.v2.base = filepath.Join(mount, base)
	m.v2.enabled = make(map[string]bool)
	m.v2.chain = append(append([]string{m.v2.base}, m.created[0]...), h.dir(m.name))
	initial, err := readWords(filepath.Join(m.v2.base, "cgroup.subtree_control"))
	if err != nil {
		return fmt.Errorf("cgroups: reading %s: %w", filepath.Join(m.v2.base, "cgroup.subtree_control"), err)
	}
	m.v2.initial = initial
	if base == "/" {
		return nil
	}
	procs := filepath.Join(m.v2.base, "cgroup.procs")
	pids, err := readPids(procs)
	if err != nil {
		return fmt.Errorf("cgroups: reading %s: %w", procs, err)
	}
	others := slices.DeleteFunc(slices.Clone(pids), func(p int) bool { return p == m.self })
	if len(others) > 0 {
		return fmt.Errorf("cgroups: %s holds processes other than vhqos (pids %v), so cgroup v2 lets it hand no controllers to vhqos's cgroups: run vhqos as a systemd service with Delegate=yes, or under `systemd-run --scope -p Delegate=yes vhqos run ...`, or set settings.cgroup_parent to a cgroup of its own", m.v2.base, head(others, 5))
	}
	if len(pids) > len(others) {
		return m.moveSelf(filepath.Join(m.v2.base, m.name+"."+supervisorLeaf))
	}
	return nil
}

// findV2 sets the unified hierarchy at mount and Parent in it. Parent ""
// is the caller's cgroup, or its parent when the caller sits in a leaf
// named leaf (one an owner made with moveSelf).
func (m *Manager) findV2(parent, mount, leaf string) error {
	_, self, err := cgroups.ParseCgroupFileUnified("/proc/self/cgroup")
	if err != nil {
		return fmt.Errorf("cgroups: reading /proc/self/cgroup: %w", err)
	}
	if self == "" {
		return errors.New("cgroups: /proc/self/cgroup has no cgroup v2 (0::) line")
	}
	if parent == "" {
		parent = self
		if leaf != "" && self != "/" && path.Base(self) == leaf {
			parent = path.Dir(self)
		}
	}
	m.hier = []*hierarchy{{root: mount, parent: path.Clean(parent)}}
	return nil
}

// attachV2 checks that the owner's subtree exists and rebuilds the
// owner's chain of directories that hand controllers down.
func (m *Manager) attachV2() error {
	if err := m.checkSubtree(); err != nil {
		return err
	}
	h := m.hier[0]
	sub := h.dir(m.name)
	base := h.parent
	buf := make([]byte, 4096)
	if n, err := unix.Getxattr(sub, baseXattr, buf); err == nil {
		b := string(buf[:n])
		if b == h.parent || path.IsAbs(b) && path.Clean(b) == b && strings.HasPrefix(h.parent, strings.TrimSuffix(b, "/")+"/") {
			base = b
		} else {
			m.log.Warn("ignoring a base cgroup that is no ancestor of the parent", "xattr", baseXattr, "dir", sub, "value", b, "parent", h.parent)
		}
	} else if err != unix.ENODATA && err != unix.ENOTSUP {
		m.log.Debug("reading the base cgroup mark", "dir", sub, "err", err)
	}
	m.v2.base = filepath.Join(h.root, base)
	m.v2.enabled = make(map[string]bool)
	m.v2.chain = []string{m.v2.base}
	rel := base
	for _, c := range splitPath(strings.TrimPrefix(h.parent, base)) {
		rel = path.Join(rel, c)
		m.v2.chain = append(m.v2.chain, filepath.Join(h.root, rel))
	}
	m.v2.chain = append(m.v2.chain, sub)
	return nil
}

// markBase records base on Parent/Name (baseXattr) when it is not Parent,
// for managers that attach later. Without the mark (a kernel before 5.7
// has no user xattrs on cgroups) they take Parent for base, and may find
// a controller unavailable that the owner could have enabled.
func (m *Manager) markBase() {
	h := m.hier[0]
	if m.v2.base == h.dir() {
		return
	}
	rel := "/" + strings.TrimPrefix(strings.TrimPrefix(m.v2.base, h.root), "/")
	if err := unix.Setxattr(h.dir(m.name), baseXattr, []byte(path.Clean(rel)), 0); err != nil {
		m.log.Info("cannot record the base cgroup for attaching managers", "dir", h.dir(m.name), "xattr", baseXattr, "err", err)
	}
}

// adoptEnabled takes on, before the owner's Close removes the subtree, the
// controllers an attached manager enabled for it, so that restoreV2 gives
// them back too: each controller Parent/Name hands down that the owner did
// not enable itself is disabled again on every directory of the chain
// above Parent/Name that did not have it when New began.
func (m *Manager) adoptEnabled() {
	sub := m.hier[0].dir(m.name)
	on, err := readWords(filepath.Join(sub, "cgroup.subtree_control"))
	if err != nil {
		return // the subtree is gone: nothing more to learn
	}
	for _, c := range on {
		if m.v2.enabled[c] {
			continue
		}
		for _, dir := range m.v2.chain[:len(m.v2.chain)-1] {
			if dir == m.v2.base && slices.Contains(m.v2.initial, c) {
				continue
			}
			m.v2.undo = append(m.v2.undo, subtreeEdit{dir, c})
		}
		m.v2.enabled[c] = true
	}
}

// moveSelf moves the supervisor (every thread) into leaf.
func (m *Manager) moveSelf(leaf string) error {
	if err := os.Mkdir(leaf, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("cgroups: creating the supervisor's cgroup %s: %w", leaf, err)
	}
	if err := writeFile(filepath.Join(leaf, "cgroup.procs"), strconv.Itoa(m.self)); err != nil {
		unix.Rmdir(leaf)
		return fmt.Errorf("cgroups: moving vhqos into %s: %w", leaf, err)
	}
	m.v2.leaf, m.v2.origin = leaf, m.v2.base
	m.log.Info("moved the supervisor into a leaf cgroup of its own", "from", m.v2.origin, "to", leaf)
	return nil
}

// enableControllers makes ctrls available to the groups under Parent/Name.
func (m *Manager) enableControllers(ctrls []string) error {
	for _, c := range ctrls {
		if m.v2.enabled[c] {
			continue
		}
		avail := filepath.Join(m.v2.base, "cgroup.controllers")
		words, err := readWords(avail)
		if err != nil {
			return fmt.Errorf("reading %s: %w", avail, err)
		}
		if !slices.Contains(words, c) {
			return fmt.Errorf("the cgroup v2 %s controller is not available: %s lists only %q (enable it in the parent's cgroup.subtree_control, run vhqos under systemd with Delegate=yes, or set settings.cgroup_parent; on a hybrid layout it may be bound to a v1 hierarchy)", c, avail, strings.Join(words, " "))
		}
		for _, dir := range m.v2.chain {
			file := filepath.Join(dir, "cgroup.subtree_control")
			on, err := readWords(file)
			if err != nil {
				return fmt.Errorf("reading %s: %w", file, err)
			}
			if slices.Contains(on, c) {
				continue
			}
			if err := writeFile(file, "+"+c); err != nil {
				hint := ""
				if errors.Is(err, unix.EBUSY) {
					hint = " (the cgroup holds processes, so it may not hand controllers down)"
				}
				return fmt.Errorf("enabling the cgroup v2 %s controller: %w%s", c, err, hint)
			}
			m.v2.undo = append(m.v2.undo, subtreeEdit{dir, c})
		}
		// Inside the subtree: removed with it, so nothing to undo.
		inner := m.innerDirs()
		if slices.Contains(threadedControllers(), c) {
			inner = append(inner, m.threadInnerDirs()...)
		}
		for _, dir := range inner {
			if err := enableIn(dir, c); err != nil {
				return fmt.Errorf("handing the cgroup v2 %s controller down inside the subtree: %w", c, err)
			}
		}
		m.v2.enabled[c] = true
		m.log.Debug("enabled cgroup v2 controller", "controller", c, "from", m.v2.base)
	}
	return nil
}

// restoreV2 gives back the controllers vhqos enabled (where nobody else
// relies on them) and moves the supervisor back into its cgroup.
func (m *Manager) restoreV2() error {
	var errs []error
	var keep []subtreeEdit
	for i := len(m.v2.undo) - 1; i >= 0; i-- {
		u := m.v2.undo[i]
		if _, err := os.Stat(u.dir); err != nil {
			continue // removed with the subtree
		}
		if err := writeFile(filepath.Join(u.dir, "cgroup.subtree_control"), "-"+u.ctrl); err != nil {
			if u.dir == m.v2.origin {
				errs = append(errs, fmt.Errorf("disabling the %s controller so that vhqos may move back: %w", u.ctrl, err))
				keep = append([]subtreeEdit{u}, keep...)
			} else {
				m.log.Info("leaving a controller enabled", "dir", u.dir, "controller", u.ctrl, "err", err)
			}
		}
	}
	m.v2.undo = keep
	if m.v2.leaf == "" {
		return errors.Join(errs...)
	}
	if err := writeFile(filepath.Join(m.v2.origin, "cgroup.procs"), strconv.Itoa(m.self)); err != nil {
		return errors.Join(append(errs, fmt.Errorf("moving vhqos back to %s: %w", m.v2.origin, err))...)
	}
	if err := unix.Rmdir(m.v2.leaf); err != nil && err != unix.ENOENT {
		return errors.Join(append(errs, &os.PathError{Op: "rmdir", Path: m.v2.leaf, Err: err})...)
	}
	m.v2.leaf = ""
	return errors.Join(errs...)
}

func readWords(file string) ([]string, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	return strings.Fields(string(data)), nil
}
