package policy

import (
	"fmt"
	"sort"
	"strings"
)

// Problem is one thing wrong with a QoS table, located for an editor.
type Problem struct {
	File   string
	Line   int // 1-based; 0 when the problem has no place (a missing key)
	Column int
	// Key is the TOML path of the value, e.g. "vhost[1].dscp".
	Key string
	// Where names the thing in words, e.g. `vhost "shop"`.
	Where string
	Msg   string
}

func (p Problem) String() string {
	var b strings.Builder
	b.WriteString(p.File)
	if p.Line > 0 {
		fmt.Fprintf(&b, ":%d:%d", p.Line, p.Column)
	}
	b.WriteString(": ")
	if p.Where != "" {
		b.WriteString(p.Where)
		b.WriteString(": ")
	}
	if last := p.Key[strings.LastIndexAny(p.Key, ".]")+1:]; last != "" {
		b.WriteString(last)
		b.WriteString(": ")
	}
	b.WriteString(p.Msg)
	return b.String()
}

// Problems is every problem found in one table, in file order. It is the
// error Parse returns.
type Problems []Problem

func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

func (ps Problems) sorted() Problems {
	sort.SliceStable(ps, func(i, j int) bool {
		if ps[i].Line != ps[j].Line {
			return ps[i].Line < ps[j].Line
		}
		return ps[i].Column < ps[j].Column
	})
	return ps
}

// didYouMean suggests the known word closest to a misspelt one.
func didYouMean(word string, known []string) string {
	best, bestDist := "", 3
	for _, k := range known {
		if d := editDistance(word, k); d < bestDist {
			best, bestDist = k, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf("; did you mean %q?", best)
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
