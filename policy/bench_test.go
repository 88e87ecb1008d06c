package policy

import (
	"fmt"
	"strings"
	"testing"
)

func bigTable(n int) []byte {
	var s strings.Builder
	for i := range n {
		fmt.Fprintf(&s, "[[vhost]]\nname = \"v%d\"\nmatch = [\"10.%d.%d.1\"]\ncpu_weight = %d\ndscp = \"AF41\"\n", i, i/256, i%256, 100+i%50)
	}
	return []byte(s.String())
}

// BenchmarkParse10000 parses a table of 10,000 vhosts, the size the reload
// benchmark uses: parsing must stay linear in the file's size.
func BenchmarkParse10000(b *testing.B) {
	data := bigTable(10000)
	for b.Loop() {
		if _, err := Parse("big.toml", data); err != nil {
			b.Fatal(err)
		}
	}
}

// A bad edit in a big table is placed by a walk of the syntax tree that a
// good table never needs; it must stay linear too.
func BenchmarkParse10000WithProblem(b *testing.B) {
	data := append(bigTable(10000), "cpu_wieght = 5\n"...)
	for b.Loop() {
		if _, err := Parse("big.toml", data); err == nil {
			b.Fatal("problem not found")
		}
	}
}
