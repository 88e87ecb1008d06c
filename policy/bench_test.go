package policy

import (
	"fmt"
	"strings"
	"testing"
)

// BenchmarkParse10000 parses a table of 10,000 vhosts, the size the reload
// benchmark uses: parsing must stay linear in the file's size.
func BenchmarkParse10000(b *testing.B) {
	var s strings.Builder
	for i := 0; i < 10000; i++ {
		fmt.Fprintf(&s, "[[vhost]]\nname = \"v%d\"\nmatch = [\"10.%d.%d.1\"]\ncpu_weight = %d\ndscp = \"AF41\"\n", i, i/256, i%256, 100+i%50)
	}
	data := []byte(s.String())
	for b.Loop() {
		if _, err := Parse("big.toml", data); err != nil {
			b.Fatal(err)
		}
	}
}
