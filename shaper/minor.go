package shaper

import (
	"hash/fnv"
	"slices"
	"strings"
)

// Major is the major number of vhqos's root qdisc, 0x7668 ("vh" in
// ASCII): tc shows it as "7668:". Operators' own handles are usually
// small numbers (1:, 10:) and the kernel gives out 8001: and up.
const Major = 0x7668

// MaxClasses is how many rated classes one table can have: HTB minors are
// 16 bits, 0 is the qdisc itself and 0xffff is kept free.
const MaxClasses = 0xfffe

// ClassID returns the class id of minor under vhqos's root, which is also
// the socket mark of the connections shaped by it: 0x7668NNNN.
func ClassID(minor uint16) uint32 { return Major<<16 | uint32(minor) }

// IsMark reports whether a socket mark is one of vhqos's class ids.
func IsMark(mark uint32) bool { return mark>>16 == Major && mark&0xffff != 0 }

// Minors gives each name (a class's name: names differ in more than case)
// its class minor, 1..MaxClasses. A name's number comes from a hash of the
// name, so it does not depend on the order of the table nor, unless two
// names collide, on which other names it has: a vhost keeps its class, and
// the mark on its open connections stays right, when others come and go.
// Collisions are settled in the order of the names, so the same set of
// names always gives the same numbers. Names past MaxClasses get none.
func Minors(names []string) map[string]uint16 {
	sorted := make([]string, len(names))
	for i, n := range names {
		sorted[i] = strings.ToLower(n)
	}
	slices.Sort(sorted)
	sorted = slices.Compact(sorted)
	out := make(map[string]uint16, len(sorted))
	used := make(map[uint16]bool, len(sorted))
	for _, n := range sorted {
		if len(used) == MaxClasses {
			break
		}
		h := fnv.New32a()
		h.Write([]byte(n))
		m := uint16(h.Sum32()%MaxClasses) + 1
		for used[m] {
			m = m%MaxClasses + 1
		}
		used[m] = true
		out[n] = m
	}
	return out
}
