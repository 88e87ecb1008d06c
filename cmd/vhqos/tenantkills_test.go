package main

import (
	"testing"

	"github.com/vhqos/vhqos/policy"
	"github.com/vhqos/vhqos/status"
)

const tenantSumsTable = `
[[tenant]]
name = "reseller"
memory_max = "4G"
[[tenant]]
name = "acme"
tenant = "reseller"
memory_max = "1G"
tasks_max = 40
[[tenant]]
name = "idle"
memory_max = "1G"
[[vhost]]
name = "shop"
match = ["shop.example"]
tenant = "acme"
tasks_max = 20
[[vhost]]
name = "news"
match = ["news.example"]
tenant = "reseller"
[[vhost]]
name = "alone"
match = ["alone.example"]
`

// Under cgroup v1 a tenant's OOM kills are those of the sites inside it,
// however deep; under v2 the kernel's hierarchical count is left alone.
func TestTenantKillsV1(t *testing.T) {
	tab, err := policy.Parse("qos.toml", []byte(tenantSumsTable))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		version int
		want    map[string]uint64
	}{
		{1, map[string]uint64{"reseller": 5, "acme": 2, "idle": 0}},
		{2, map[string]uint64{"reseller": 7, "acme": 7, "idle": 7}},
	} {
		site := func(name string, kills uint64) status.Class {
			return status.Class{Name: name, Memory: &status.Memory{Events: map[string]uint64{"oom_kill": kills, "max": 9}}}
		}
		tenant := func(name string) status.Tenant {
			return status.Tenant{Name: name, Memory: &status.Memory{Events: map[string]uint64{"oom_kill": 0, "max": 1}}}
		}
		rep := &status.Report{Cgroup: tc.version,
			Classes: []status.Class{{Name: "default", Default: true, Memory: &status.Memory{Events: map[string]uint64{"oom_kill": 11}}}, site("shop", 2), site("news", 3), site("alone", 4)},
			Tenants: []status.Tenant{tenant("reseller"), tenant("acme"), tenant("idle")},
		}
		if tc.version == 2 {
			for i := range rep.Tenants {
				rep.Tenants[i].Memory.Events["oom_kill"] = 7 // the kernel's own sum
			}
		}
		tenantFaultSums(rep, tab, false)
		for _, rt := range rep.Tenants {
			if got := rt.Memory.Events["oom_kill"]; got != tc.want[rt.Name] || rt.Memory.Events["max"] != 1 {
				t.Errorf("cgroup v%d: tenant %s has %d OOM kills (max %d), want %d (max 1)", tc.version, rt.Name, got, rt.Memory.Events["max"], tc.want[rt.Name])
			}
		}
	}
}

// Where the kernel counts a refused fork in the cgroup of the process that
// forked (cgroup v1, v2 before Linux 6.11 or with pids_localevents), a
// tenant's forks refused are those of the sites inside it, however deep:
// the kernel leaves the tenant's own count at 0 even when its tasks_max
// refused them. Where it counts hierarchically, the kernel's count stands.
func TestTenantForksRefused(t *testing.T) {
	tab, err := policy.Parse("qos.toml", []byte(tenantSumsTable))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		version int
		local   bool
		kernel  uint64 // what the kernel shows in each tenant's pids.events
		want    map[string]uint64
	}{
		{"v1", 1, true, 0, map[string]uint64{"reseller": 83 + 5, "acme": 83, "idle": 0}},
		{"v2 before 6.11", 2, true, 0, map[string]uint64{"reseller": 83 + 5, "acme": 83, "idle": 0}},
		{"v2 hierarchical", 2, false, 9, map[string]uint64{"reseller": 9, "acme": 9, "idle": 9}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			site := func(name string, refused uint64) status.Class {
				return status.Class{Name: name, Tasks: &status.Tasks{Current: 3, MaxEvents: refused}}
			}
			rep := &status.Report{Cgroup: tc.version,
				Classes: []status.Class{{Name: "default", Default: true, Tasks: &status.Tasks{MaxEvents: 11}}, site("shop", 83), site("news", 5), site("alone", 4)},
			}
			for _, name := range []string{"reseller", "acme", "idle"} {
				rep.Tenants = append(rep.Tenants, status.Tenant{Name: name, Tasks: &status.Tasks{Max: 40, Current: 21, MaxEvents: tc.kernel}})
			}
			tenantFaultSums(rep, tab, tc.local)
			for _, rt := range rep.Tenants {
				if rt.Tasks.MaxEvents != tc.want[rt.Name] || rt.Tasks.Current != 21 || rt.Tasks.Max != 40 {
					t.Errorf("tenant %s: %+v, want %d forks refused (current 21, max 40)", rt.Name, *rt.Tasks, tc.want[rt.Name])
				}
			}
			for _, c := range rep.Classes {
				if want := map[string]uint64{"default": 11, "shop": 83, "news": 5, "alone": 4}[c.Name]; c.Tasks.MaxEvents != want {
					t.Errorf("vhost %s: %d forks refused, want its own %d", c.Name, c.Tasks.MaxEvents, want)
				}
			}
		})
	}
}

// The kernel counts refused forks hierarchically only under cgroup v2 on
// a kernel that lists pids_localevents among its cgroup features (6.11
// and later), and not when a cgroup2 mount carries that option.
func TestPidsEventsLocal(t *testing.T) {
	const features611 = "nsdelegate\nfavordynmods\nmemory_localevents\nmemory_recursiveprot\nmemory_hugetlb_accounting\npids_localevents\n"
	const features61 = "nsdelegate\nfavordynmods\nmemory_localevents\nmemory_recursiveprot\n"
	mount := func(opts string) string {
		return "22 1 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw\n" +
			"30 25 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 " + opts + "\n"
	}
	for _, tc := range []struct {
		name, features, mountinfo string
		want                      bool
	}{
		{"Linux 6.1", features61, mount("rw,nsdelegate,memory_recursiveprot"), true},
		{"Linux 6.11 and later", features611, mount("rw,nsdelegate,memory_recursiveprot"), false},
		{"pids_localevents", features611, mount("rw,nsdelegate,pids_localevents"), true},
		{"pids_localevents on a second mount", features611, mount("rw,nsdelegate") + "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,pids_localevents\n", true},
		{"the option's name elsewhere", features611, mount("rw") + "50 1 0:40 / /mnt/pids_localevents rw - tmpfs pids_localevents rw\n", false},
		{"features unreadable", "", mount("rw"), true},
	} {
		if got := pidsLocalFrom(tc.features, tc.mountinfo); got != tc.want {
			t.Errorf("%s: pidsLocalFrom = %v, want %v", tc.name, got, tc.want)
		}
	}
	if !pidsEventsLocal(1) {
		t.Error("cgroup v1 counts refused forks where they were made, but pidsEventsLocal(1) is false")
	}
}
