package status

import (
	stdbytes "bytes"
	"encoding/json"
	"strings"
	"testing"
)

func tenantReport() *Report {
	return &Report{
		Classes: []Class{{Name: "shop", Tenant: "acme"}, {Name: "default", Default: true}},
		Tenants: []Tenant{
			{Name: "reseller", Sites: 0, CPUUsec: 9e6},
			{Name: "acme", Parent: "reseller", Sites: 1, CPUMax: 100, CPUUsec: 3_500_000, Throttled: 1_200_000, Faults: 42,
				Memory: &Memory{Max: 1 << 30, Current: 300 << 20, Events: map[string]uint64{"max": 5, "oom_kill": 1}},
				Tasks:  &Tasks{Max: 200, Current: 12, MaxEvents: 3}},
		},
	}
}

// `vhqos status` shows a line per tenant with what its cgroup used against
// its limits, and names each vhost's tenant in --json.
func TestReportTenants(t *testing.T) {
	var out stdbytes.Buffer
	tenantReport().WriteTable(&out, nil)
	var header, acme string
	for _, line := range strings.Split(out.String(), "\n") {
		if strings.HasPrefix(line, "TENANT") {
			header = line
		}
		if strings.HasPrefix(line, "acme ") {
			acme = line
		}
	}
	if header == "" || acme == "" {
		t.Fatalf("no tenant table:\n%s", out.String())
	}
	for _, want := range []string{"reseller", "3.5", "1.2", "42", "100%", "300.0M", "1.0G", "5", "12", "200", "3"} {
		if !strings.Contains(acme, want) {
			t.Errorf("acme's line %q lacks %q", acme, want)
		}
	}
	data, err := json.Marshal(tenantReport())
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		VHosts  []map[string]any `json:"vhosts"`
		Tenants []map[string]any `json:"tenants"`
	}
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	if got.VHosts[0]["tenant"] != "acme" || got.Tenants[1]["tenant"] != "reseller" || got.Tenants[1]["cpu_max_faults"] != 42.0 {
		t.Errorf("JSON: vhosts %v, tenants %v", got.VHosts, got.Tenants)
	}
	if _, ok := got.VHosts[1]["tenant"]; ok {
		t.Error("the defaults have a tenant in JSON")
	}
}

func TestTenantMetrics(t *testing.T) {
	got := gatherAll(t, NewMetrics(tenantReport))
	for k, v := range map[string]float64{
		`vhqos_tenant_cpu_seconds_total{tenant="acme"}`:                    3.5,
		`vhqos_tenant_cpu_seconds_total{tenant="reseller"}`:                9,
		`vhqos_tenant_cpu_throttled_seconds_total{tenant="acme"}`:          1.2,
		`vhqos_tenant_cpu_max_faults_total{tenant="acme"}`:                 42,
		`vhqos_tenant_memory_bytes{tenant="acme"}`:                         300 << 20,
		`vhqos_tenant_memory_events_total{event="oom_kill",tenant="acme"}`: 1,
		`vhqos_tenant_tasks{tenant="acme"}`:                                12,
		`vhqos_tenant_pids_max_events_total{tenant="acme"}`:                3,
	} {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("%s = %v (present: %v), want %v", k, g, ok, v)
		}
	}
	if _, ok := got[`vhqos_tenant_memory_bytes{tenant="reseller"}`]; ok {
		t.Error("memory of a tenant the kernel accounts no memory for")
	}
}
