package policy

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
)

const tenantTable = `
[[tenant]]
name = "reseller"
cpu_max = "300%"
[tenant.defaults]
dscp = "AF11"
io_weight = 300

[[tenant]]
name = "acme"
tenant = "reseller"
cpu_max = "100%"
[tenant.defaults]
cpu_weight = 200
dscp = "EF"

[[vhost]]
name = "shop"
match = ["shop.example"]
tenant = "acme"

[[vhost]]
name = "blog"
match = ["blog.example"]
tenant = "ACME"
cpu_weight = 50
dscp = "CS1"

[[vhost]]
name = "news"
match = ["news.example"]
tenant = "reseller"

[[vhost]]
name = "alone"
match = ["alone.example"]
`

// Sites inherit the keys they do not set from their tenant's
// [tenant.defaults], then from the tenants it is inside, nearest first;
// their cgroups nest in their tenants'.
func TestTenants(t *testing.T) {
	tab, err := parse(t, tenantTable)
	if err != nil {
		t.Fatal(err)
	}
	if len(tab.Tenants) != 2 || tab.Tenants[1].Parent != "reseller" || tab.Tenants[1].Resources.CPUQuotaPercent != 100 {
		t.Fatalf("tenants: %+v", tab.Tenants)
	}
	for _, tc := range []struct {
		vhost, tenant, group string
		cpuWeight, ioWeight  uint64
		dscp                 int
	}{
		{"shop", "acme", "tenant-reseller/tenant-acme/vhost-shop", 200, 300, 46},
		{"blog", "acme", "tenant-reseller/tenant-acme/vhost-blog", 50, 300, 8},
		{"news", "reseller", "tenant-reseller/vhost-news", 0, 300, 10},
		{"alone", "", "vhost-alone", 0, 0, -1},
	} {
		t.Run(tc.vhost, func(t *testing.T) {
			c := tab.Class(tc.vhost)
			if c == nil {
				t.Fatal("no such vhost")
			}
			if c.Tenant != tc.tenant || tab.GroupOf(c) != tc.group {
				t.Errorf("tenant %q, group %q; want %q, %q", c.Tenant, tab.GroupOf(c), tc.tenant, tc.group)
			}
			if c.Resources.CPUWeight != tc.cpuWeight || c.Resources.IOWeight != tc.ioWeight || c.DSCP != tc.dscp {
				t.Errorf("cpu_weight %d, io_weight %d, dscp %d; want %d, %d, %d", c.Resources.CPUWeight, c.Resources.IOWeight, c.DSCP, tc.cpuWeight, tc.ioWeight, tc.dscp)
			}
		})
	}
	if g := tab.TenantGroup(&tab.Tenants[1]); g != "tenant-reseller/tenant-acme" {
		t.Errorf("acme's group is %q", g)
	}
	if g := tab.GroupOf(&tab.Defaults); g != "default" {
		t.Errorf("the defaults' group is %q", g)
	}
	// What check prints reads back to the same table.
	back, err := parse(t, string(tab.Marshal()))
	if err != nil {
		t.Fatalf("the marshalled table does not parse: %v\n%s", err, tab.Marshal())
	}
	if !reflect.DeepEqual(back.Tenants, tab.Tenants) {
		t.Errorf("tenants after a round trip: %+v, want %+v", back.Tenants, tab.Tenants)
	}
	for i := range tab.VHosts {
		a, b := &tab.VHosts[i], &back.VHosts[i]
		if a.Tenant != b.Tenant || !a.Resources.Equal(b.Resources) || a.DSCP != b.DSCP {
			t.Errorf("vhost %s after a round trip: %+v, want %+v", a.Name, b, a)
		}
	}
}

func TestTenantProblems(t *testing.T) {
	const site = "[[vhost]]\nname = \"shop\"\nmatch = [\"shop.example\"]\n"
	const shaped = "[settings]\nshape_devices = [\"eth0\"]\n\n"
	for _, tc := range []struct {
		name, toml string
		line       int
		key, msg   string
		warning    bool
	}{
		{"unknown tenant", "[[tenant]]\nname = \"acme\"\n" + site + "tenant = \"acne\"\n", 6, "vhost[0].tenant", `"acne" is no tenant; did you mean "acme"?`, false},
		{"no tenants at all", site + "tenant = \"acme\"\n", 4, "vhost[0].tenant", `"acme" is no tenant: add a [[tenant]] section with name = "acme"`, false},
		{"unknown parent", "[[tenant]]\nname = \"acme\"\ntenant = \"resseller\"\n[[tenant]]\nname = \"reseller\"\n", 3, "tenant[0].tenant", `"resseller" is no tenant; did you mean "reseller"?`, false},
		{"inside itself", "[[tenant]]\nname = \"acme\"\ntenant = \"acme\"\n", 3, "tenant[0].tenant", "in a loop: acme -> acme", false},
		{"a loop", "[[tenant]]\nname = \"a\"\ntenant = \"b\"\n[[tenant]]\nname = \"b\"\ntenant = \"a\"\n", 3, "tenant[0].tenant", "in a loop: a -> b -> a", false},
		{"duplicate", "[[tenant]]\nname = \"acme\"\n[[tenant]]\nname = \"ACME\"\n", 4, "tenant[1].name", `"acme" is already the name of tenant[0] (line 2)`, false},
		{"no name", "[[tenant]]\ncpu_max = \"50%\"\n", 1, "tenant[0].name", "missing: every tenant needs a name", false},
		{"dscp on a tenant", "[[tenant]]\nname = \"acme\"\ndscp = \"EF\"\n", 3, "tenant[0].dscp", "not allowed in a tenant: dscp marks and paces connections", false},
		{"match on a tenant", "[[tenant]]\nname = \"acme\"\nmatch = [\"a.example\"]\n", 3, "tenant[0].match", "belongs in the tenant's sites", false},
		{"cap on a tenant", "[[tenant]]\nname = \"acme\"\nmax_connections = 5\n", 3, "tenant[0].max_connections", "set it in [tenant.defaults]", false},
		{"unknown key", "[[tenant]]\nname = \"acme\"\ncpu_mx = \"5%\"\n", 3, "tenant[0].cpu_mx", `did you mean "cpu_max"?`, false},
		{"bad limit", "[[tenant]]\nname = \"acme\"\ncpu_max = \"fast\"\n", 3, "tenant[0].cpu_max", "is not a percentage", false},
		{"bad default", "[[tenant]]\nname = \"acme\"\n[tenant.defaults]\ncpu_weight = 0\n", 4, "tenant[0].defaults.cpu_weight", "1..10000", false},
		{"match in tenant defaults", "[[tenant]]\nname = \"acme\"\n[tenant.defaults]\nmatch = [\"a.example\"]\n", 4, "tenant[0].defaults.match", "not allowed in [tenant.defaults]", false},
		{"defaults not a table", "[[tenant]]\nname = \"acme\"\ndefaults = 5\n", 3, "tenant[0].defaults", "must be a section: write [tenant.defaults]", false},
		{"tenant not an array", "[tenant]\nname = \"acme\"\n", 1, "tenant", "write [[tenant]] with double brackets", false},
		{"tenant in [defaults]", "[defaults]\ntenant = \"acme\"\n", 2, "defaults.tenant", "[defaults] belongs to no tenant", false},
		{"tenant not a string", "[[tenant]]\nname = \"acme\"\n" + site + "tenant = 1\n", 6, "vhost[0].tenant", "name the site's tenant as a string", false},
		{"site above its tenant", "[[tenant]]\nname = \"acme\"\ncpu_max = \"100%\"\n" + site + "tenant = \"acme\"\ncpu_max = \"150%\"\n", 8, "vhost[0].cpu_max", `150% is above what vhost "shop"'s tenant "acme" allows (100%)`, true},
		{"inner tenant above its parent", "[[tenant]]\nname = \"r\"\ncpu_max = \"100%\"\n[[tenant]]\nname = \"acme\"\ntenant = \"r\"\ncpu_max = \"200%\"\n", 7, "tenant[1].cpu_max", `200% is above what tenant "acme"'s tenant "r" allows (100%)`, true},
		{"memory above the tenant's", "[[tenant]]\nname = \"acme\"\nmemory_max = \"1G\"\n" + site + "tenant = \"acme\"\nmemory_max = \"2G\"\n", 8, "vhost[0].memory_max", `2G is above what vhost "shop"'s tenant "acme" allows (1G)`, true},
		{"tasks above the tenant's", "[[tenant]]\nname = \"acme\"\ntasks_max = 100\n" + site + "tenant = \"acme\"\ntasks_max = 200\n", 8, "vhost[0].tasks_max", `200 is above what vhost "shop"'s tenant "acme" allows (100)`, true},
		{"egress_rate on a tenant without devices", "[[tenant]]\nname = \"acme\"\negress_rate = \"40Mbit\"\n", 3, "tenant[0].egress_rate", "needs the devices its traffic leaves by", false},
		{"connection_rate on a tenant", "[[tenant]]\nname = \"acme\"\nconnection_rate = \"1Mbit\"\n", 3, "tenant[0].connection_rate", "not allowed in a tenant: connection_rate marks and paces connections", false},
		{"egress_rate above the tenant's", shaped + "[[tenant]]\nname = \"acme\"\negress_rate = \"40Mbit\"\n" + site + "tenant = \"acme\"\negress_rate = \"100Mbit\"\n", 11, "vhost[0].egress_rate", `100Mbit is above what vhost "shop"'s tenant "acme" allows (40Mbit): the tenant's class bounds it`, true},
		{"memory_high above the tenant's memory_max", "[[tenant]]\nname = \"acme\"\nmemory_max = \"256M\"\n" + site + "tenant = \"acme\"\nmemory_high = \"512M\"\n", 8, "vhost[0].memory_high", `512M is above what vhost "shop"'s tenant "acme" allows (memory_max 256M): the tenant's cgroup reaches its memory_max first`, true},
		{"memory_high above the tenant's memory_high", "[[tenant]]\nname = \"acme\"\nmemory_max = \"1G\"\nmemory_high = \"128M\"\n" + site + "tenant = \"acme\"\nmemory_high = \"512M\"\n", 9, "vhost[0].memory_high", `512M is above what vhost "shop"'s tenant "acme" allows (128M): the tenant's cgroup bounds it`, true},
		{"a bad default is told once, where it is written", "[[tenant]]\nname = \"acme\"\n[tenant.defaults]\ncpu_weight = 0\n" + site + "tenant = \"acme\"\n" + strings.ReplaceAll(site, "shop", "blog") + "tenant = \"acme\"\n", 4, "tenant[0].defaults.cpu_weight", "1..10000", false},
		{"a site's problem with an inherited key points at the tenant", "[[tenant]]\nname = \"acme\"\n[tenant.defaults]\negress_rate = \"10Mbit\"\n" + site + "tenant = \"acme\"\n", 4, "vhost[0].egress_rate", `from [tenant.defaults] of tenant "acme": needs the devices`, false},
		{"[tenant.defaults] before its [[tenant]]", "[tenant.defaults]\ncpu_weight = 200\n\n[[tenant]]\nname = \"acme\"\n", 1, "tenant.defaults", "[tenant.defaults] comes before any [[tenant]]: TOML gives a [tenant.defaults] to the [[tenant]] above it", false},
		{"[tenant.defaults] and no [[tenant]]", "[tenant.defaults]\ncpu_weight = 200\n" + site, 1, "tenant.defaults", "[tenant.defaults] comes before any [[tenant]]", false},
		{"[tenant] beside [[tenant]]", "[[tenant]]\nname = \"a\"\n\n[tenant]\nname = \"b\"\n", 4, "tenant", "write [[tenant]] with double brackets", false},
		{"tenants with egress_rate too deep", shaped + deepTenants(8), 41, "tenant[7].egress_rate", "tenants with an egress_rate are nested 8 deep here (t0 -> t1 -> t2 -> t3 -> t4 -> t5 -> t6 -> t7)", false},
		{"inherited above the tenant", "[[tenant]]\nname = \"acme\"\ncpu_max = \"100%\"\n[tenant.defaults]\ncpu_max = \"150%\"\n" + site + "tenant = \"acme\"\n", 5, "vhost[0].cpu_max", `from [tenant.defaults] of tenant "acme": 150% is above what`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tab, err := parse(t, tc.toml)
			var ps Problems
			if tc.warning {
				if err != nil {
					t.Fatalf("a warning stopped the table: %v", err)
				}
				ps = tab.Warnings
			} else if !errors.As(err, &ps) {
				t.Fatalf("err = %v, want Problems", err)
			}
			if len(ps) != 1 {
				t.Fatalf("want one problem, got %d:\n%v", len(ps), ps)
			}
			p := ps[0]
			if p.Line != tc.line || p.Key != tc.key || !strings.Contains(p.Msg, tc.msg) || p.Warning != tc.warning {
				t.Errorf("got  %s (line %d key %q warning %v)\nwant line %d key %q warning %v mentioning %q", p, p.Line, p.Key, p.Warning, tc.line, tc.key, tc.warning, tc.msg)
			}
		})
	}
}

// deepTenants is n tenants with egress_rate, each inside the one before.
func deepTenants(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "[[tenant]]\nname = \"t%d\"\n", i)
		if i > 0 {
			fmt.Fprintf(&b, "tenant = \"t%d\"\n", i-1)
		}
		fmt.Fprintf(&b, "egress_rate = \"%dMbit\"\n\n", 100-i)
	}
	return b.String()
}

// A tenant's egress_rate is read, written back by Marshal, and shown in
// the tenant; its sites keep their own.
func TestTenantEgress(t *testing.T) {
	tab, err := parse(t, "[settings]\nshape_devices = [\"eth0\"]\n[[tenant]]\nname = \"acme\"\negress_rate = \"40Mbit\"\n"+
		"[[vhost]]\nname = \"shop\"\nmatch = [\"shop.example\"]\ntenant = \"acme\"\n"+
		"[[vhost]]\nname = \"blog\"\nmatch = [\"blog.example\"]\ntenant = \"acme\"\negress_rate = \"10Mbit\"\n")
	if err != nil {
		t.Fatal(err)
	}
	if tab.Tenants[0].Egress != 40e6 || tab.Class("shop").Rates.Egress != 0 || tab.Class("blog").Rates.Egress != 10e6 || len(tab.Warnings) != 0 {
		t.Fatalf("tenant %+v, shop %+v, blog %+v, warnings %v", tab.Tenants[0], tab.Class("shop").Rates, tab.Class("blog").Rates, tab.Warnings)
	}
	back, err := parse(t, string(tab.Marshal()))
	if err != nil || !reflect.DeepEqual(back.Tenants, tab.Tenants) {
		t.Errorf("after a round trip: %+v (%v), want %+v\n%s", back, err, tab.Tenants, tab.Marshal())
	}
}

// Each problem of a tenant or of a site's tenant key is told once, at the
// place to edit, a warning like an error at the value, in words that do
// not contradict each other: every problem of each table, in full.
func TestTenantProblemsTold(t *testing.T) {
	const site = "[[vhost]]\nname = \"shop\"\nmatch = [\"shop.example\"]\ntenant = \"acme\"\n"
	for _, tc := range []struct {
		name, toml string
		want       []string
	}{
		{"a typo in [tenant.defaults] is told there only",
			"[[tenant]]\nname = \"acme\"\n[tenant.defaults]\nmemry_max = \"100M\"\n" + site + strings.ReplaceAll(site, "shop", "blog"),
			[]string{`qos.toml:4:1: tenant "acme" (tenant[0]) [tenant.defaults] defaults.memry_max: unknown key; did you mean "memory_max"? Known keys here: cpu_weight, cpu_max, io_weight, io_read_bps, io_write_bps, io_read_iops, io_write_iops, memory_max, memory_high, tasks_max, dscp, egress_rate, connection_rate, max_connections, max_connections_per_ip, over_limit, refuse_status, retry_after`}},
		{"a setting in [tenant.defaults] is told there only",
			"[[tenant]]\nname = \"acme\"\n[tenant.defaults]\ntrack = \"fork\"\n" + site,
			[]string{`qos.toml:4:1: tenant "acme" (tenant[0]) [tenant.defaults] defaults.track: belongs in [settings], not in tenant "acme" (tenant[0]) [tenant.defaults]`}},
		{"a warning points at the value",
			"[[tenant]]\nname = \"acme\"\ntasks_max = 40\n" + site + "tasks_max = 60\n",
			[]string{`qos.toml:8:13: warning: vhost "shop" (vhost[0]) tasks_max: 60 is above what vhost "shop"'s tenant "acme" allows (40): the tenant's cgroup bounds it, so vhost "shop" never gets more`}},
		{"an inherited warning points at the value in [tenant.defaults]",
			"[[tenant]]\nname = \"acme\"\ncpu_max = \"100%\"\n[tenant.defaults]\ncpu_max = \"150%\"\n" + site,
			[]string{`qos.toml:5:11: warning: vhost "shop" (vhost[0]) cpu_max: from [tenant.defaults] of tenant "acme": 150% is above what vhost "shop"'s tenant "acme" allows (100%): the tenant's cgroup bounds it, so vhost "shop" never gets more`}},
		{"no warning beside an error at the same key",
			"[[tenant]]\nname = \"acme\"\nmemory_max = \"1G\"\n" + site + "memory_max = \"512M\"\nmemory_high = \"3G\"\n",
			[]string{`qos.toml:9:15: vhost "shop" (vhost[0]) memory_high: "3G" is above memory_max ("512M", line 8); memory_high must be at most memory_max: it is there to slow the class down before memory_max stops it`}},
		{"a vhost named as a tenant",
			"[[tenant]]\nname = \"beta\"\n[[tenant]]\nname = \"acme\"\n" + site + strings.ReplaceAll(strings.ReplaceAll(site, "shop", "blog"), `"acme"`, `"shop"`),
			[]string{`qos.toml:12:10: vhost "blog" (vhost[1]) tenant: "shop" is a vhost, not a tenant; the tenants are acme, beta`}},
		{"a vhost named as a tenant's parent",
			"[[tenant]]\nname = \"acme\"\ntenant = \"shop\"\n" + site,
			[]string{`qos.toml:3:10: tenant "acme" (tenant[0]) tenant: "shop" is a vhost, not a tenant; the tenants are acme`}},
		{"a vhost named as a tenant's parent, the tenants in alphabetical order",
			"[[tenant]]\nname = \"zeta\"\n[[tenant]]\nname = \"acme\"\ntenant = \"shop\"\n" + site,
			[]string{`qos.toml:5:10: tenant "acme" (tenant[1]) tenant: "shop" is a vhost, not a tenant; the tenants are acme, zeta`}},
		{"a vhost named as a tenant, and no tenants",
			strings.ReplaceAll(site, `"acme"`, `"shop"`),
			[]string{`qos.toml:4:10: vhost "shop" (vhost[0]) tenant: "shop" is a vhost, not a tenant; this table has no [[tenant]] section`}},
		{"an empty tenant",
			"[[tenant]]\nname = \"acme\"\n" + strings.ReplaceAll(site, `"acme"`, `""`),
			[]string{`qos.toml:6:10: vhost "shop" (vhost[0]) tenant: is empty: leave tenant out for a site of no tenant, or name its tenant; the tenants are acme`}},
		{"an empty parent",
			"[[tenant]]\nname = \"acme\"\ntenant = \"\"\n",
			[]string{`qos.toml:3:10: tenant "acme" (tenant[0]) tenant: is empty: leave tenant out for a tenant inside no other, or name the one it is inside; the tenants are acme`}},
		{"a tenant nothing is close to",
			"[[tenant]]\nname = \"acme\"\n[[tenant]]\nname = \"beta\"\n" + strings.ReplaceAll(site, `"acme"`, `"zzz"`),
			[]string{`qos.toml:8:10: vhost "shop" (vhost[0]) tenant: "zzz" is no tenant; the tenants are acme, beta`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tab, err := parse(t, tc.toml)
			var ps Problems
			if !errors.As(err, &ps) {
				if err != nil {
					t.Fatal(err)
				}
				ps = tab.Warnings
			}
			var got []string
			for _, p := range ps {
				got = append(got, p.String())
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}

// Enclosing walks a tenant outwards, the nearest first, for a parsed table
// and for one built by hand (no index; a loop that Parse would refuse
// stops at the first tenant met again); ShapingTenant is the nearest of
// them with an egress_rate.
func TestEnclosing(t *testing.T) {
	parsed, err := parse(t, "[settings]\nshape_devices = [\"eth0\"]\n"+
		"[[tenant]]\nname = \"reseller\"\negress_rate = \"100Mbit\"\n"+
		"[[tenant]]\nname = \"Acme\"\ntenant = \"RESELLER\"\n"+
		"[[tenant]]\nname = \"solo\"\n")
	if err != nil {
		t.Fatal(err)
	}
	byHand := &Table{Tenants: []Tenant{{Name: "a", Parent: "b", Egress: 1e6}, {Name: "b", Parent: "c"}, {Name: "c", Parent: "A"}}}
	for _, tc := range []struct {
		name    string
		table   *Table
		tenant  string
		want    []string
		shaping string
	}{
		{"inner, any case", parsed, "acme", []string{"Acme", "reseller"}, "reseller"},
		{"outermost", parsed, "reseller", []string{"reseller"}, "reseller"},
		{"no egress_rate around", parsed, "solo", []string{"solo"}, ""},
		{"no tenant", parsed, "", nil, ""},
		{"unknown", parsed, "zzz", nil, ""},
		{"by hand, a loop", byHand, "b", []string{"b", "c", "a"}, "a"},
		{"by hand, from the loop's start", byHand, "a", []string{"a", "b", "c"}, "a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, tn := range tc.table.Enclosing(tc.tenant) {
				got = append(got, tn.Name)
			}
			shaping := ""
			if tn := tc.table.ShapingTenant(tc.tenant); tn != nil {
				shaping = tn.Name
			}
			if !slices.Equal(got, tc.want) || shaping != tc.shaping {
				t.Errorf("Enclosing(%q) = %q, ShapingTenant %q; want %q, %q", tc.tenant, got, shaping, tc.want, tc.shaping)
			}
		})
	}
}
