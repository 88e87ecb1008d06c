package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/vhqos/vhqos/cgroup"
	"github.com/vhqos/vhqos/policy"
	"github.com/vhqos/vhqos/supervisor"
)

// reloader keeps the running QoS table in step with its file. A new table
// is validated whole before anything changes; applying it is all or
// nothing; a refused table leaves the old one in force.
type reloader struct {
	path string
	log  *slog.Logger
	cg   *cgroup.Manager
	sup  *supervisor.Supervisor
	raw  []byte
	// applied, if set, is told the bytes of each table put in force.
	applied func(raw []byte)
	// shapeDevices are the devices the keeper claimed (bandwidth.go).
	shapeDevices []string

	mu         sync.Mutex // current, for readers outside the watch loop
	current    *policy.Table
	generation uint64
	reloads    atomic.Uint64
	refused    atomic.Uint64
	// refusal is why the file's table was refused while the file holds
	// it (the one before stays in force), nil once a table from it is
	// applied: unlike the refused counter it says what is true now, for
	// an alert that lasts as long as the broken file, and for vhqos
	// reload to say why.
	refusal atomic.Pointer[string]
}

// refuse counts a refused table and keeps why, for the status report.
func (r *reloader) refuse(why string) {
	r.refused.Add(1)
	r.refusal.Store(&why)
}

// refusedWhy says why the file's table is refused now, "" when it is not.
func (r *reloader) refusedWhy() string {
	if why := r.refusal.Load(); why != nil {
		return *why
	}
	return ""
}

// table returns the table in force and its generation (0 for the first).
func (r *reloader) table() (*policy.Table, uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.current, r.generation
}

// watch re-reads the table whenever its directory changes: an in-place
// write, an editor's write-and-rename, a symlink swap (Kubernetes ConfigMap
// volumes swap ..data), delete and re-create. The directory is watched,
// not the file, because renames replace the file the watch was on.
// Requests on reloads (SIGHUP) arrive on hup.
func (r *reloader) watch(ctx context.Context, hup <-chan struct{}) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watching the QoS table: %w", err)
	}
	defer w.Close()
	dir := filepath.Dir(r.path)
	if err := w.Add(dir); err != nil {
		return fmt.Errorf("watching %s: %w", dir, err)
	}
	// From here on an edit is seen; tests wait for this line.
	r.log.Debug("watching the QoS table for changes", "path", r.path)
	// An edit made after the table was first read but before the watch
	// was in place sent no event: look once (nothing happens if the file
	// is what was read).
	r.reload(time.Now(), false)
	// Editors write in several steps; act once they have settled.
	const settle = 20 * time.Millisecond
	var timer <-chan time.Time
	var first time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			if ev.Op == fsnotify.Chmod {
				continue
			}
			if timer == nil {
				first = time.Now()
			}
			timer = time.After(settle)
		case err := <-w.Errors:
			r.log.Warn("watching the QoS table", "err", err)
		case <-timer:
			timer = nil
			r.reload(first, false)
		case <-hup:
			r.reload(time.Now(), true)
		}
	}
}

// reload reads the file and applies it if it changed (or if forced).
func (r *reloader) reload(since time.Time, force bool) {
	// A bug in applying a table must not take the supervisor down: the
	// server's accepts would fail from then on.
	defer func() {
		if v := recover(); v != nil {
			r.log.Error("internal error while applying the QoS table; please report it", "path", r.path,
				"panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			r.refuse(fmt.Sprintf("internal error while applying it (please report it): %v", v))
		}
	}()
	data, err := os.ReadFile(r.path)
	if err != nil {
		// Between a delete and the re-create, or a broken symlink swap.
		r.log.Warn("QoS table unreadable; keeping the one in force", "path", r.path, "err", err)
		return
	}
	if !force && bytes.Equal(data, r.raw) {
		return
	}
	if policy.Blank(data) {
		// Writing in place truncates first: an empty file is far more
		// likely half a write than a wish to drop every vhost.
		r.log.Warn("QoS table is empty; keeping the one in force (write a comment into it to really run without vhosts)", "path", r.path)
		return
	}
	next, err := policy.Parse(r.path, data)
	if err != nil {
		r.log.Error("refused QoS table; the previous one stays in force", "path", r.path, "problems", err.Error())
		r.raw = data
		r.refuse(err.Error())
		return
	}
	prev, _ := r.table()
	if err := r.apply(next); err != nil {
		msg := "applying the QoS table failed; the previous one stays in force (SIGHUP tries this file again)"
		if errors.As(err, new(needsRestart)) {
			// Trying again cannot help; the error says what will.
			msg = "QoS table not applied; the previous one stays in force"
		}
		r.log.Error(msg, "path", r.path, "err", err)
		// The same bytes are not tried again on the next event (the
		// rename an editor does after writing, the watch's first look):
		// each try writes the limits that fit and takes them back.
		r.raw = data
		r.refuse("applying it failed: " + err.Error())
		return
	}
	r.raw = data
	r.reloads.Add(1)
	r.refusal.Store(nil)
	if r.applied != nil {
		r.applied(data)
	}
	// Warnings first: whoever waits for "reloaded" finds them logged.
	logWarnings(r.log, next)
	added, removed, moved, changed := tableChanges(prev, next)
	r.log.Info("reloaded QoS table", "path", r.path, "added", added, "removed", removed, "moved", moved, "changed", changed,
		"took", time.Since(since).Round(time.Microsecond))
}

// needsRestart is a change of the table that only a restart of vhqos can
// make: reloading the same file again would fail the same way.
type needsRestart struct{ error }

// apply moves from the current table to next: limits of kept groups change
// in place, new groups are made, the supervisor switches tables, then the
// groups of removed vhosts go, their processes moving to the defaults. If a
// cgroup write fails, what was changed is put back. What it changed, for
// the log, is tableChanges.
func (r *reloader) apply(next *policy.Table) error {
	if next.Settings.CgroupParent != r.current.Settings.CgroupParent {
		return needsRestart{errors.New("settings.cgroup_parent cannot change while vhqos runs; restart it to move its cgroups")}
	}
	if next.Settings.Track != r.current.Settings.Track {
		return needsRestart{errors.New("settings.track cannot change while vhqos runs: the seccomp filter is fixed when the server starts; restart vhqos")}
	}
	if next.Settings.Placement != r.current.Settings.Placement {
		return needsRestart{errors.New("settings.placement cannot change while vhqos runs: the seccomp filter is fixed when the server starts; restart vhqos")}
	}
	if !sameDevices(next.Settings.ShapeDevices, r.shapeDevices) {
		return needsRestart{fmt.Errorf("settings.shape_devices cannot change while vhqos runs (running with %q): vhqos run set the devices up when it started; restart it", r.shapeDevices)}
	}
	old := classes(r.current)
	neu := classes(next)
	var undo []func()
	rollback := func() {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
	}
	for _, name := range sortedNames(neu) {
		c := neu[name]
		prev, existed := old[name]
		if existed && prev.Resources.Equal(c.Resources) {
			continue
		}
		if err := r.cg.Set(name, c.Resources); err != nil {
			rollback()
			return fmt.Errorf("setting the limits of %s: %w", c.Name, err)
		}
		if existed {
			res := prev.Resources
			undo = append(undo, func() { r.cg.Set(name, res) })
		} else {
			undo = append(undo, func() { r.cg.Remove(name) })
		}
	}
	// Classes first: a connection marked for one that is not there yet
	// would go unshaped.
	syncShaping(r.log, r.shapeDevices, next)
	r.sup.SetClassifier(newTableClassifier(next))
	r.mu.Lock()
	r.current = next
	r.generation++
	r.mu.Unlock()
	if classificationChanged(old, neu) {
		// Before the removed groups go: processes still to be moved
		// find their new groups, and nothing is moved into a group
		// about to be removed.
		n := r.sup.Reclassify()
		r.log.Debug("applied the new classes to what the server holds", "listeners_remarked", n.Listeners,
			"connections_remarked", n.Connections, "processes_moved", n.Processes)
	}
	var errs []error
	gone := goneGroups(old, neu)
	for _, name := range gone {
		if err := r.cg.RemoveTo(name, movedTo(old[name], next)); err != nil {
			errs = append(errs, err)
		}
	}
	if len(gone) > 0 {
		r.sup.ForgetPlacements()
	}
	if len(errs) > 0 {
		r.log.Warn("removing the cgroups of removed vhosts", "err", errors.Join(errs...))
	}
	return nil
}

// goneGroups lists the groups of old that neu has not, deepest first: a
// tenant's group goes after what was inside it.
func goneGroups(old, neu map[string]*policy.Class) []string {
	var gone []string
	for _, name := range slices.Backward(sortedNames(old)) {
		if _, kept := neu[name]; !kept {
			gone = append(gone, name)
		}
	}
	return gone
}

// tableChanges says, for the log, what a reload from prev to next did:
// the vhosts and tenants added and removed, those that moved to another
// tenant (tenantMoves), and those whose limits, or the connections they
// claim and how they mark them, changed. All of it follows from the two
// tables, as apply's cgroup writes do.
func tableChanges(prev, next *policy.Table) (added, removed, moved, changed []string) {
	old, neu := classes(prev), classes(next)
	for _, name := range sortedNames(neu) {
		c := neu[name]
		switch o, existed := old[name]; {
		case !existed:
			added = append(added, c.Name)
		case !o.Resources.Equal(c.Resources) || !sameClassification(o, c):
			changed = append(changed, c.Name)
		}
	}
	for _, name := range goneGroups(old, neu) {
		removed = append(removed, old[name].Name)
	}
	added, removed, moved = tenantMoves(prev, next, added, removed)
	return added, removed, moved, changed
}

// tenantMoves takes what moved in the cgroup tree out of the added and
// removed of tableChanges, which are by cgroup: a site or tenant whose
// place changed is in both, by the same name (tenant-acme/vhost-blog
// went, tenant-beta/vhost-blog came). It lists as moved each one whose
// own tenant changed, "blog: acme -> beta" ("no tenant" for none): it
// stayed, with its processes. What is inside a tenant that moved went
// with it, and is told only as that tenant.
func tenantMoves(prev, next *policy.Table, added, removed []string) (stillAdded, stillRemoved, moved []string) {
	gone := make(map[string]bool, len(removed))
	for _, name := range removed {
		gone[name] = true
	}
	both := map[string]bool{}
	for _, name := range added {
		if !gone[name] {
			stillAdded = append(stillAdded, name)
			continue
		}
		both[name] = true
		was, now := tenantOfEntry(prev, name), tenantOfEntry(next, name)
		if !strings.EqualFold(was, now) {
			moved = append(moved, fmt.Sprintf("%s: %s -> %s", name, orNoTenant(was), orNoTenant(now)))
		}
	}
	for _, name := range removed {
		if !both[name] {
			stillRemoved = append(stillRemoved, name)
		}
	}
	return stillAdded, stillRemoved, moved
}

// tenantOfEntry is the tenant that a class of t, or a tenant's stand-in
// ("tenant NAME", classes), is directly inside, "" for none.
func tenantOfEntry(t *policy.Table, name string) string {
	if tn, ok := strings.CutPrefix(name, tenantEntry); ok {
		if at := t.TenantOf(tn); at != nil {
			return at.Parent
		}
		return ""
	}
	if c := t.Class(name); c != nil {
		return c.Tenant
	}
	return ""
}

func orNoTenant(name string) string {
	if name == "" {
		return "no tenant"
	}
	return name
}

// classes maps the cgroup group of every class of t to the class, and of
// every tenant to a class that stands for it: a tenant has only a name
// ("tenant NAME", for the log) and resources.
func classes(t *policy.Table) map[string]*policy.Class {
	out := map[string]*policy.Class{groupName(&t.Defaults, t): &t.Defaults}
	for i := range t.VHosts {
		out[groupName(&t.VHosts[i], t)] = &t.VHosts[i]
	}
	for i := range t.Tenants {
		tn := &t.Tenants[i]
		out[t.TenantGroup(tn)] = &policy.Class{Name: tenantEntry + tn.Name, Resources: tn.Resources, DSCP: -1}
	}
	return out
}

// tenantEntry begins the name of a tenant's stand-in among the classes.
const tenantEntry = "tenant "

// movedTo is where the processes still in the group of a class that next
// no longer has go: the group of the vhost of the same name if next has
// one (a site that moved to another tenant keeps its class), else next's
// defaults.
func movedTo(c *policy.Class, next *policy.Table) string {
	// A tenant's stand-in has a name no class can have ("tenant NAME").
	if now := next.Class(c.Name); now != nil {
		return groupName(now, next)
	}
	return groupName(&next.Defaults, next)
}

func sortedNames(m map[string]*policy.Class) []string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// classificationChanged reports whether any connection may now belong to
// another class or need another mark: a class's mark, names, addresses or
// listen restriction changed, or classes came or went.
func classificationChanged(old, neu map[string]*policy.Class) bool {
	if len(old) != len(neu) {
		return true
	}
	for name, c := range neu {
		o, ok := old[name]
		if !ok || !sameClassification(o, c) {
			return true
		}
	}
	return false
}

// sameClassification reports whether two versions of a class claim the
// same connections and mark them alike.
func sameClassification(a, b *policy.Class) bool {
	return a.DSCP == b.DSCP && slices.Equal(a.Match, b.Match) && slices.Equal(a.Listen, b.Listen) && a.Admission == b.Admission && a.Rates == b.Rates
}
