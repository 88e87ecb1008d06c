package cgroup

import (
	"slices"
	"testing"
)

// The group names are what an operator finds under the subtree and in
// /proc/PID/cgroup (README, "cgroups"), so the literals here are the
// documented names, not a copy of the code.
func TestGroupNames(t *testing.T) {
	if HomeGroup != "home" || DefaultGroup != "default" {
		t.Errorf("HomeGroup %q, DefaultGroup %q; the README documents home and default", HomeGroup, DefaultGroup)
	}
	for _, tc := range []struct {
		vhost, group string
	}{
		{"shop", "vhost-shop"},
		{"shop.example.com", "vhost-shop.example.com"},
		{"A_b-c.d", "vhost-A_b-c.d"},
		{"7", "vhost-7"},
		// Names the QoS table refuses still cannot land on vhqos's own
		// groups or on an interface file of the parent.
		{"home", "vhost-home"},
		{"default", "vhost-default"},
		{"cgroup.procs", "vhost-cgroup.procs"},
	} {
		got := VHostGroup(tc.vhost)
		if got != tc.group {
			t.Errorf("VHostGroup(%q) = %q, want %q", tc.vhost, got, tc.group)
		}
		if err := validName(got); err != nil {
			t.Errorf("VHostGroup(%q) = %q, which Set refuses: %v", tc.vhost, got, err)
		}
		if got == HomeGroup || got == DefaultGroup {
			t.Errorf("VHostGroup(%q) = %q collides with vhqos's own group", tc.vhost, got)
		}
	}
	for _, g := range []string{HomeGroup, DefaultGroup} {
		if err := validName(g); err != nil {
			t.Errorf("%q: %v", g, err)
		}
	}
}

func TestReserved(t *testing.T) {
	if got, want := ReservedNames(), []string{"default", "home", "supervisor"}; !slices.Equal(got, want) {
		t.Errorf("ReservedNames() = %q, want %q", got, want)
	}
	for _, tc := range []struct {
		name     string
		reserved bool
	}{
		{"default", true}, {"DEFAULT", true}, {"Home", true}, {"home", true}, {"supervisor", true}, {"SuperVisor", true},
		{"default2", false}, {"homes", false}, {"shop", false}, {"vhost-home", false}, {"", false},
	} {
		if got := Reserved(tc.name); got != tc.reserved {
			t.Errorf("Reserved(%q) = %v, want %v", tc.name, got, tc.reserved)
		}
	}
	// Every name returned must itself be refused, or a message listing the
	// reserved names would name one the table accepts.
	for _, n := range ReservedNames() {
		if !Reserved(n) {
			t.Errorf("ReservedNames lists %q, which Reserved accepts", n)
		}
	}
}
