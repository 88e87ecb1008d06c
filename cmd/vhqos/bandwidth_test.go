package main

import (
	"fmt"
	"strings"
	"testing"

	"github.com/vhqos/vhqos/policy"
	"github.com/vhqos/vhqos/shaper"
)

// A tenant's egress_rate is an HTB class holding a class for each of its
// sites: their guaranteed rates share the tenant's (so HTB bounds the
// sum), and each may borrow up to its own egress_rate or the tenant's,
// the lesser. A tenant without one is looked through; sites of no rated
// tenant and without a rate have no class.
func TestPlanEgress(t *testing.T) {
	tab, err := policy.Parse("qos.toml", []byte(`
[settings]
shape_devices = ["eth0"]

[defaults]
egress_rate = "5Mbit"

[[tenant]]
name = "reseller"
egress_rate = "100Mbit"

[[tenant]]
name = "acme"
tenant = "reseller"
egress_rate = "40Mbit"

[[tenant]]
name = "plain"
tenant = "reseller"
cpu_max = "50%"

[[tenant]]
name = "free"

[[vhost]]
name = "shop"
match = ["shop.example"]
tenant = "acme"

[[vhost]]
name = "blog"
match = ["blog.example"]
tenant = "acme"
egress_rate = "10Mbit"

[[vhost]]
name = "wiki"
match = ["wiki.example"]
tenant = "acme"
egress_rate = "1Gbit"

[[vhost]]
name = "news"
match = ["news.example"]
tenant = "plain"

[[vhost]]
name = "mail"
match = ["mail.example"]
tenant = "free"

[[vhost]]
name = "solo"
match = ["solo.example"]
egress_rate = "8Mbit"

[[vhost]]
name = "unrated"
match = ["unrated.example"]
`))
	if err != nil {
		t.Fatal(err)
	}
	plan := planEgress(tab)
	// Each class as "parent: rate/ceil" in Mbit/s, by name.
	names := map[uint16]string{}
	for c, m := range plan.sites {
		names[m] = c.Name
	}
	for tn, m := range plan.tenants {
		names[m] = "tenant " + tn.Name
	}
	got := map[string]string{}
	for m, c := range plan.classes {
		parent := "root"
		if c.Parent != 0 {
			parent = names[c.Parent]
		}
		got[names[m]] = fmt.Sprintf("%s: %g/%g", parent, float64(c.Rate)/1e6, float64(c.Ceil)/1e6)
	}
	want := map[string]string{
		"default":         "root: 5/5",
		"solo":            "root: 8/8",
		"tenant reseller": "root: 100/100",
		// reseller holds acme and news (plain is looked through).
		"tenant acme": "tenant reseller: 40/40",
		"news":        "tenant reseller: 50/100",
		// acme's three sites share its 40 Mbit/s.
		"shop": "tenant acme: 13.333333/40",
		"blog": "tenant acme: 10/10",
		"wiki": "tenant acme: 13.333333/40",
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("classes:\n%v\nwant\n%v", got, want)
	}
	// The marks are the sites' classes; mail and unrated have none.
	for _, name := range []string{"mail", "unrated"} {
		if _, ok := plan.sites[tab.Class(name)]; ok {
			t.Errorf("%s has a class", name)
		}
	}
	if m := egressMinors(tab)[tab.Class("shop")]; m == 0 || plan.classes[m].Parent != plan.tenants[tab.TenantOf("acme")] {
		t.Errorf("shop's mark is class %d, want its class inside acme's", m)
	}
	if err := shaperTreeOK(plan.classes); err != nil {
		t.Error(err)
	}
}

// policy refuses tenants with egress_rate nested deeper than HTB nests
// classes around a site: the deepest it takes plans a tree of exactly
// shaper.MaxDepth classes.
func TestPlanEgressDeepest(t *testing.T) {
	table := func(depth int) string {
		var b strings.Builder
		b.WriteString("[settings]\nshape_devices = [\"eth0\"]\n")
		for i := range depth {
			fmt.Fprintf(&b, "[[tenant]]\nname = \"t%d\"\negress_rate = \"%dMbit\"\n", i, 100-i)
			if i > 0 {
				fmt.Fprintf(&b, "tenant = \"t%d\"\n", i-1)
			}
		}
		fmt.Fprintf(&b, "[[vhost]]\nname = \"site\"\nmatch = [\"site.example\"]\ntenant = \"t%d\"\n", depth-1)
		return b.String()
	}
	tab, err := policy.Parse("qos.toml", []byte(table(shaper.MaxDepth-1)))
	if err != nil {
		t.Fatalf("tenants with egress_rate %d deep: %v", shaper.MaxDepth-1, err)
	}
	plan := planEgress(tab)
	depth := 0
	for m := plan.sites[tab.Class("site")]; m != 0; m = plan.classes[m].Parent {
		depth++
	}
	if depth != shaper.MaxDepth {
		t.Errorf("the site's class is %d deep, want %d", depth, shaper.MaxDepth)
	}
	if err := shaperTreeOK(plan.classes); err != nil {
		t.Error(err)
	}
	if _, err := policy.Parse("qos.toml", []byte(table(shaper.MaxDepth))); err == nil || !strings.Contains(err.Error(), "nested 8 deep") {
		t.Errorf("tenants with egress_rate %d deep: %v; want a refusal", shaper.MaxDepth, err)
	}
}

// shaperTreeOK checks what shaper.Sync checks of a tree before it touches
// a device, and that the rates inside each parent add up to no more than
// its rate.
func shaperTreeOK(classes map[uint16]shaper.Class) error {
	sum := map[uint16]uint64{}
	for _, c := range classes {
		if c.Rate > c.Ceil || c.Rate == 0 {
			return fmt.Errorf("class with rate %d, ceil %d", c.Rate, c.Ceil)
		}
		if c.Parent != 0 {
			p, ok := classes[c.Parent]
			if !ok {
				return fmt.Errorf("a class inside %d, which is not planned", c.Parent)
			}
			if c.Ceil > p.Ceil {
				return fmt.Errorf("a class with ceil %d inside one with ceil %d", c.Ceil, p.Ceil)
			}
			sum[c.Parent] += c.Rate
		}
	}
	for m, s := range sum {
		if s > classes[m].Rate {
			return fmt.Errorf("the rates inside class %d add up to %d, more than its %d", m, s, classes[m].Rate)
		}
	}
	return nil
}
