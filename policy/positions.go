package policy

import (
	"bytes"
	"strconv"
	"strings"

	"github.com/pelletier/go-toml/v2/unstable"
)

// position is where a key or table header stands in the file: a byte
// offset, turned into line and column only for a problem (doing that for
// every key made parsing quadratic in the file's size).
type position struct{ offset int }

// lineCol turns an offset into a 1-based line and column.
func lineCol(data []byte, offset int) (line, col int) {
	line = 1 + bytes.Count(data[:offset], []byte{'\n'})
	col = offset - bytes.LastIndexByte(data[:offset], '\n')
	return line, col
}

// positions maps key paths ("vhost[1].dscp", "vhost[1].io_read_bps./dev/vda",
// "vhost[1]" for a table header) to where they are written. Decoding into
// maps loses positions; this walk of the document's syntax tree keeps them
// so every problem can name its line.
func positions(data []byte) map[string]position {
	out := map[string]position{}
	var p unstable.Parser
	p.Reset(data)
	arrays := map[string]int{}
	prefix := ""
	for p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.Table, unstable.ArrayTable:
			name := joinKey(e.Key())
			if e.Kind == unstable.ArrayTable {
				base := name
				name = base + "[" + strconv.Itoa(arrays[base]) + "]"
				arrays[base]++
			}
			prefix = name
			out[name] = shapeOf(&p, e)
		case unstable.KeyValue:
			key := joinKey(e.Key())
			path := key
			if prefix != "" {
				path = prefix + "." + key
			}
			out[path] = keyPos(&p, e)
			if v := e.Value(); v.Kind == unstable.InlineTable {
				inlinePositions(&p, v, path, out)
			}
		}
	}
	return out
}

func inlinePositions(p *unstable.Parser, table *unstable.Node, path string, out map[string]position) {
	it := table.Children()
	for it.Next() {
		kv := it.Node()
		if kv.Kind != unstable.KeyValue {
			continue
		}
		out[path+"."+joinKey(kv.Key())] = keyPos(p, kv)
	}
}

func joinKey(it unstable.Iterator) string {
	var parts []string
	for it.Next() {
		parts = append(parts, string(it.Node().Data))
	}
	return strings.Join(parts, ".")
}

// keyPos prefers the key's own place, so the column points at what to edit.
func keyPos(p *unstable.Parser, kv *unstable.Node) position {
	it := kv.Key()
	if it.Next() {
		if n := it.Node(); n.Raw.Length > 0 {
			return shapeOf(p, n)
		}
	}
	return shapeOf(p, kv.Value())
}

func shapeOf(p *unstable.Parser, n *unstable.Node) position {
	if n.Raw.Length == 0 {
		if c := n.Child(); c != nil && c.Raw.Length > 0 {
			n = c
		}
	}
	if n.Raw.Length == 0 {
		return position{offset: -1}
	}
	return position{offset: int(n.Raw.Offset)}
}
