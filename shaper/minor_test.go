package shaper

import (
	"fmt"
	"testing"
)

func TestMinors(t *testing.T) {
	names := []string{"shop", "blog", "wiki", "forum", "mail", "default"}
	got := Minors(names)
	seen := map[uint16]string{}
	for _, n := range names {
		m, ok := got[n]
		if !ok || m == 0 || m > MaxClasses {
			t.Errorf("%s: minor %d (%v), want 1..%d", n, m, ok, MaxClasses)
		}
		if other, dup := seen[m]; dup {
			t.Errorf("%s and %s share minor %d", n, other, m)
		}
		seen[m] = n
	}
	// Order and case do not matter; more names leave these ones alone.
	for _, other := range [][]string{
		{"DEFAULT", "mail", "Forum", "wiki", "blog", "SHOP"},
		append([]string{"news", "shop2", "a", "b", "c"}, names...),
	} {
		again := Minors(other)
		for _, n := range names {
			if again[n] != got[n] {
				t.Errorf("with %v, %s has minor %d, want %d", other, n, again[n], got[n])
			}
		}
	}
	// Colliding names all get a number, the same ones every time.
	many := make([]string, 70000)
	for i := range many {
		many[i] = fmt.Sprintf("site%d", i)
	}
	all := Minors(many)
	if len(all) != MaxClasses {
		t.Errorf("%d names got %d minors, want %d (all there are)", len(many), len(all), MaxClasses)
	}
	if id := ClassID(2); id != 0x76680002 || !IsMark(id) || IsMark(0x76680000) || IsMark(0x12340002) {
		t.Errorf("ClassID(2) = %#x; IsMark wrong", id)
	}
}

// A foreign qdisc is named as tc names it, kind and handle in hex.
func TestForeignQdisc(t *testing.T) {
	for _, tc := range []struct {
		kind   string
		handle uint32
		want   string
	}{
		{"tbf", 0x10000, "tbf 1:"},
		{"fq_codel", 0x80010000, "fq_codel 8001:"},
		{"htb", 0x76680002, "htb 7668:2"},
	} {
		if got := (&ForeignError{Device: "eth0", Kind: tc.kind, Handle: tc.handle}).Qdisc(); got != tc.want {
			t.Errorf("%s %#x: %q, want %q", tc.kind, tc.handle, got, tc.want)
		}
	}
}
