package cgroup

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// A tenant's group holds its sites' groups: a process placed in a site
// sits at tenant/site, the tenant's limits are in its own directory and
// its controllers reach the sites (cgroup v2 hands them down), a group
// whose parent was never made is refused, a tenant with sites inside it
// cannot be removed before them, and an attached manager (a restarted
// supervisor) adopts the nesting.
func TestNestedGroups(t *testing.T) {
	m := newTestManager(t, Options{})
	if err := m.Set("tenant-x/vhost-a", Resources{}); err == nil || !strings.Contains(err.Error(), "parent group tenant-x does not exist") {
		t.Errorf("a site of a tenant never made: %v", err)
	}
	if err := m.Set("tenant-acme", Resources{CPUQuotaPercent: 50}); err != nil {
		t.Fatal(err)
	}
	if err := m.Set("tenant-acme/vhost-shop", Resources{CPUWeight: 300}); err != nil {
		t.Fatal(err)
	}
	// A controller enabled only after the site exists reaches it too.
	if err := m.Set("tenant-acme/vhost-blog", Resources{TasksMax: 50}); err != nil {
		t.Fatal(err)
	}
	pid := startSleeper(t)
	if err := m.Place("tenant-acme/vhost-shop", pid); err != nil {
		t.Fatal(err)
	}
	if got, want := cgroupOf(t, pid, m.Version()), m.Path("tenant-acme/vhost-shop"); got != want || !strings.HasSuffix(got, "/"+m.name+"/tenant-acme/vhost-shop") {
		t.Errorf("pid %d is in %q, want %q", pid, got, want)
	}
	quota, weight, tasks := "cpu.cfs_quota_us", "cpu.shares", "pids.max"
	tenantDir, shopDir, blogDir := dirOf(t, m, "cpu", "tenant-acme"), dirOf(t, m, "cpu", "tenant-acme/vhost-shop"), dirOf(t, m, "pids", "tenant-acme/vhost-blog")
	wantQuota, wantWeight := "50000", "3072"
	if m.Version() == 2 {
		quota, weight, wantQuota, wantWeight = "cpu.max", "cpu.weight", "50000 100000", "300"
	}
	for _, f := range []struct{ dir, file, want string }{
		{tenantDir, quota, wantQuota},
		{shopDir, weight, wantWeight},
		{blogDir, tasks, "50"},
	} {
		data, err := os.ReadFile(filepath.Join(f.dir, f.file))
		if err != nil || strings.TrimSpace(string(data)) != f.want {
			t.Errorf("%s/%s = %q (%v), want %q", f.dir, f.file, strings.TrimSpace(string(data)), err, f.want)
		}
	}
	if err := m.Remove("tenant-acme"); err == nil || !strings.Contains(err.Error(), "still inside it") {
		t.Errorf("removing a tenant with its sites inside: %v", err)
	}
	a := attach(t, m, "")
	if got := a.Groups(); !containsAll(got, "tenant-acme", "tenant-acme/vhost-shop", "tenant-acme/vhost-blog") {
		t.Errorf("an attached manager adopted %v", got)
	}
	if err := m.RemoveTo("tenant-acme/vhost-shop", HomeGroup); err != nil {
		t.Fatal(err)
	}
	if err := m.Remove("tenant-acme/vhost-blog"); err != nil {
		t.Fatal(err)
	}
	if err := m.Remove("tenant-acme"); err != nil {
		t.Fatalf("removing an empty tenant: %v", err)
	}
	if _, err := os.Stat(tenantDir); !os.IsNotExist(err) {
		t.Errorf("%s is still there (%v)", tenantDir, err)
	}
	if got, want := cgroupOf(t, pid, m.Version()), m.Path(HomeGroup); got != want {
		t.Errorf("the site's process went to %q, want %q", got, want)
	}
}

// dirOf is group's directory in the hierarchy of controller ctrl (v2: the
// unified one).
func dirOf(t *testing.T, m *Manager, ctrl, group string) string {
	t.Helper()
	if m.Version() == 2 {
		return m.hier[0].dir(m.name, group)
	}
	i, ok := m.ctrlHier[ctrl]
	if !ok {
		t.Skipf("no cgroup v1 %s hierarchy on this machine", ctrl)
	}
	return m.hier[i].dir(m.name, group)
}

func containsAll(list []string, want ...string) bool {
	have := map[string]bool{}
	for _, s := range list {
		have[s] = true
	}
	for _, w := range want {
		if !have[w] {
			return false
		}
	}
	return true
}

// A site's cpu_max above its tenant's, and a tenant and its site lowered
// together, are what a table may ask for; cgroup v1's CFS refuses a
// child's quota above its parent's, so there the site's is written as the
// tenant's, lowered first when the tenant's goes down, and raised again
// when the tenant's goes up. Under v2 every group gets its own.
func TestNestedQuotas(t *testing.T) {
	m := newTestManager(t, Options{})
	quotaOf := func(group string) float64 {
		t.Helper()
		dir := dirOf(t, m, "cpu", group)
		if m.Version() == 2 {
			data, err := os.ReadFile(filepath.Join(dir, "cpu.max"))
			if err != nil {
				t.Fatal(err)
			}
			var q, period float64
			if _, err := fmt.Sscanf(string(data), "%f %f", &q, &period); err != nil {
				return 0 // "max"
			}
			return q / 1000
		}
		data, err := os.ReadFile(filepath.Join(dir, "cpu.cfs_quota_us"))
		if err != nil {
			t.Fatal(err)
		}
		q, _ := strconv.ParseFloat(strings.TrimSpace(string(data)), 64)
		return max(q, 0) / 1000
	}
	for i, step := range []struct {
		what                   string
		tenant, site           float64 // percent asked for
		wantTenant, wantSiteV1 float64 // percent written (v2: the site's own)
	}{
		{"site above its tenant", 100, 150, 100, 100},
		{"both lowered", 50, 50, 50, 50},
		{"tenant raised, site kept", 200, 50, 200, 50},
		{"tenant lowered below the site", 30, 50, 30, 30},
		{"tenant's cap removed", 0, 50, 0, 50},
	} {
		if err := m.Set("tenant-acme", Resources{CPUQuotaPercent: step.tenant}); err != nil {
			t.Fatalf("step %d, %s: the tenant: %v", i, step.what, err)
		}
		if err := m.Set("tenant-acme/vhost-shop", Resources{CPUQuotaPercent: step.site}); err != nil {
			t.Fatalf("step %d, %s: the site: %v", i, step.what, err)
		}
		wantSite := step.wantSiteV1
		if m.Version() == 2 {
			wantSite = step.site
		}
		if got := quotaOf("tenant-acme"); got != step.wantTenant {
			t.Errorf("step %d, %s: the tenant's quota is %v%%, want %v%%", i, step.what, got, step.wantTenant)
		}
		if got := quotaOf("tenant-acme/vhost-shop"); got != wantSite {
			t.Errorf("step %d, %s: the site's quota is %v%%, want %v%%", i, step.what, got, wantSite)
		}
	}
}
