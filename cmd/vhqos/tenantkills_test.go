package main

import (
	"testing"

	"github.com/vhqos/vhqos/policy"
	"github.com/vhqos/vhqos/status"
)

// Under cgroup v1 a tenant's OOM kills are those of the sites inside it,
// however deep; under v2 the kernel's hierarchical count is left alone.
func TestTenantKillsV1(t *testing.T) {
	tab, err := policy.Parse("qos.toml", []byte(`
[[tenant]]
name = "reseller"
memory_max = "4G"
[[tenant]]
name = "acme"
tenant = "reseller"
memory_max = "1G"
[[tenant]]
name = "idle"
memory_max = "1G"
[[vhost]]
name = "shop"
match = ["shop.example"]
tenant = "acme"
[[vhost]]
name = "news"
match = ["news.example"]
tenant = "reseller"
[[vhost]]
name = "alone"
match = ["alone.example"]
`))
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
		tenantKillsV1(rep, tab)
		for _, rt := range rep.Tenants {
			if got := rt.Memory.Events["oom_kill"]; got != tc.want[rt.Name] || rt.Memory.Events["max"] != 1 {
				t.Errorf("cgroup v%d: tenant %s has %d OOM kills (max %d), want %d (max 1)", tc.version, rt.Name, got, rt.Memory.Events["max"], tc.want[rt.Name])
			}
		}
	}
}
