package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vhqos/vhqos/policy"
)

// An edit written after vhqos read the table at start but before its watch
// was in place produces no event the watch could see; the watch must still
// look at the file once. The edit here is a bad one, so the verdict
// (refused) needs no cgroups or supervisor to observe.
func TestWatchSeesEditBeforeItStarted(t *testing.T) {
	tests := []struct {
		name        string
		read, now   string
		wantRefused uint64
	}{
		{"edited before the watch", "[defaults]\ncpu_weight = 100\n", "[defaults]\ncpu_weight = 0\n", 1},
		{"unchanged", "[defaults]\ncpu_weight = 100\n", "[defaults]\ncpu_weight = 100\n", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "qos.toml")
			if err := os.WriteFile(path, []byte(tc.now), 0o644); err != nil {
				t.Fatal(err)
			}
			var logs syncBuffer
			r := &reloader{path: path, log: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})), raw: []byte(tc.read)}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- r.watch(ctx, nil) }()
			// The watch logs this line once it is in place and has
			// looked at the file.
			deadline := time.Now().Add(time.Minute)
			for !strings.Contains(logs.String(), "watching the QoS table") && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			for r.refused.Load() < tc.wantRefused && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			if got := r.refused.Load(); got != tc.wantRefused {
				t.Errorf("tables refused: %d, want %d; log:\n%s", got, tc.wantRefused, logs.String())
			}
			// vhqos_table_refused: the file holds a refused table.
			if got := r.refusedWhy() != ""; got != (tc.wantRefused > 0) {
				t.Errorf("the file's table refused now: %v, want %v", got, tc.wantRefused > 0)
			}
			if tc.wantRefused > 0 && !strings.Contains(r.refusedWhy(), "cpu_weight") {
				t.Errorf("the reason kept for vhqos status and reload does not name the problem: %q", r.refusedWhy())
			}
			if tc.wantRefused > 0 && !strings.Contains(logs.String(), "cpu_weight") {
				t.Errorf("the refusal does not name the problem; log:\n%s", logs.String())
			}
		})
	}
}

// syncBuffer is a bytes.Buffer the watch goroutine and the test share.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// A reload that moves a site to another tenant logs it as moved, with
// both tenants, not as a site added and a site removed (its cgroup's path
// changed, the site did not); a tenant that moves into another is told as
// that tenant alone, not as its sites; sites and tenants that really come
// and go stay added and removed.
func TestTableChanges(t *testing.T) {
	table := func(src string) *policy.Table {
		t.Helper()
		tab, err := policy.Parse("qos.toml", []byte(src))
		if err != nil {
			t.Fatal(err)
		}
		return tab
	}
	tenant := func(name, parent string) string {
		s := fmt.Sprintf("[[tenant]]\nname = %q\n", name)
		if parent != "" {
			s += fmt.Sprintf("tenant = %q\n", parent)
		}
		return s
	}
	site := func(name, tenant string) string {
		s := fmt.Sprintf("[[vhost]]\nname = %q\nmatch = [%q]\n", name, name+".example")
		if tenant != "" {
			s += fmt.Sprintf("tenant = %q\n", tenant)
		}
		return s
	}
	both := tenant("acme", "") + tenant("beta", "")
	for _, tc := range []struct {
		name       string
		prev, next string
		added      []string
		removed    []string
		moved      []string
		changed    []string
	}{
		{"to another tenant", both + site("blog", "acme"), both + site("blog", "beta"), nil, nil, []string{"blog: acme -> beta"}, nil},
		{"out of its tenant, into one, a tenant gone", both + site("blog", "acme") + site("shop", ""), tenant("beta", "") + site("blog", "") + site("shop", "beta"),
			nil, []string{"tenant acme"}, []string{"shop: no tenant -> beta", "blog: acme -> no tenant"}, nil},
		{"a site added and one removed", both + site("blog", "acme"), both + site("shop", "acme"), []string{"shop"}, []string{"blog"}, nil, nil},
		{"a tenant into another, with its sites", both + site("blog", "acme") + site("shop", "acme"), tenant("beta", "") + tenant("acme", "beta") + site("blog", "acme") + site("shop", "acme"),
			nil, nil, []string{"tenant acme: no tenant -> beta"}, nil},
		{"a new tenant around a tenant", tenant("acme", "") + site("blog", "acme"), tenant("reseller", "") + tenant("acme", "reseller") + site("blog", "acme"),
			[]string{"tenant reseller"}, nil, []string{"tenant acme: no tenant -> reseller"}, nil},
		{"limits changed in place", both + site("blog", "acme"), both + site("blog", "acme") + "cpu_weight = 200\n", nil, nil, nil, []string{"blog"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			added, removed, moved, changed := tableChanges(table(tc.prev), table(tc.next))
			if !slices.Equal(added, tc.added) || !slices.Equal(removed, tc.removed) || !slices.Equal(moved, tc.moved) || !slices.Equal(changed, tc.changed) {
				t.Errorf("added %q, removed %q, moved %q, changed %q; want %q, %q, %q, %q", added, removed, moved, changed, tc.added, tc.removed, tc.moved, tc.changed)
			}
		})
	}
}

// A table that changes what only a restart can change is refused with
// the way out, and the log does not suggest SIGHUP, which would fail the
// same way.
func TestReloadRefusesRestartOnlySettings(t *testing.T) {
	const vhost = "\n[[vhost]]\nname = \"shop\"\nmatch = [\"127.0.0.2\"]\n"
	for _, tc := range []struct{ name, settings, says string }{
		{"placement", "[settings]\nplacement = \"thread\"\n", "settings.placement cannot change while vhqos runs"},
		{"track", "[settings]\ntrack = \"fork\"\n", "settings.track cannot change while vhqos runs"},
		{"cgroup_parent", "[settings]\ncgroup_parent = \"/elsewhere\"\n", "settings.cgroup_parent cannot change while vhqos runs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			current, err := policy.Parse("qos.toml", []byte(vhost))
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(t.TempDir(), "qos.toml")
			if err := os.WriteFile(path, []byte(tc.settings+vhost), 0o644); err != nil {
				t.Fatal(err)
			}
			var logs syncBuffer
			r := &reloader{path: path, log: slog.New(slog.NewTextHandler(&logs, nil)), current: current}
			r.reload(time.Now(), true)
			if got, _ := r.table(); got != current {
				t.Error("the table in force changed")
			}
			if why := r.refusedWhy(); !strings.Contains(why, tc.says) || !strings.Contains(why, "restart") {
				t.Errorf("refused because %q, want it to say %q and how to restart", why, tc.says)
			}
			if out := logs.String(); !strings.Contains(out, "QoS table not applied") || strings.Contains(out, "SIGHUP") {
				t.Errorf("log says:\n%s\nwant the table not applied, with no SIGHUP hint", out)
			}
		})
	}
}
