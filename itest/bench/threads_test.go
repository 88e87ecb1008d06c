package main

import (
	"reflect"
	"testing"
)

func TestSelectVariants(t *testing.T) {
	all := []threadsVariant{
		{name: "native", matching: -1},
		{name: "floor (continue)", matching: -1},
		{name: "vhqos placement=process", matching: 1},
		{name: "floor (reads)", matching: -1},
		{name: "vhqos placement=thread", matching: 3},
		{name: "floor (emulate, reads)", matching: -1, optional: true},
	}
	for _, tc := range []struct {
		only string
		want []string
		// matching of each variant kept, by name (-1: none)
		floors map[string]string
	}{
		{"", []string{"native", "floor (continue)", "vhqos placement=process", "floor (reads)", "vhqos placement=thread"},
			map[string]string{"vhqos placement=process": "floor (continue)", "vhqos placement=thread": "floor (reads)"}},
		{"placement=thread", []string{"native", "floor (reads)", "vhqos placement=thread"},
			map[string]string{"vhqos placement=thread": "floor (reads)"}},
		{"thread|emulate", []string{"native", "floor (reads)", "vhqos placement=thread", "floor (emulate, reads)"},
			map[string]string{"vhqos placement=thread": "floor (reads)"}},
		{"floor", []string{"native", "floor (continue)", "floor (reads)", "floor (emulate, reads)"}, nil},
		{"nothing like it", []string{"native"}, nil},
	} {
		got := selectVariants(all, tc.only)
		var names []string
		floors := map[string]string{}
		for _, v := range got {
			names = append(names, v.name)
			if v.matching >= 0 {
				floors[v.name] = got[v.matching].name
			}
		}
		if !reflect.DeepEqual(names, tc.want) {
			t.Errorf("-only %q: variants %q, want %q", tc.only, names, tc.want)
		}
		if tc.floors == nil {
			tc.floors = map[string]string{}
		}
		if !reflect.DeepEqual(floors, tc.floors) {
			t.Errorf("-only %q: measured against %v, want %v", tc.only, floors, tc.floors)
		}
	}
}

func TestFloorCounts(t *testing.T) {
	for _, tc := range []struct {
		out  string
		want []int64
	}{
		{"", nil},
		{"floor: 12 notifications\n[core:notice] AH00094\nfloor: 3456 notifications\n", []int64{12, 3456}},
		{"floor: notifications\n", nil},
	} {
		if got := floorCounts(tc.out); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("floorCounts(%q) = %v, want %v", tc.out, got, tc.want)
		}
	}
}
