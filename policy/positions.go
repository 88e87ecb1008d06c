package policy

import (
	"bytes"
	"strconv"
	"strings"

	"github.com/pelletier/go-toml/v2/unstable"
)

// position is where a key and its value stand in the file, as byte offsets
// (-1: unknown). Offsets are turned into line and column only for a
// problem: doing that for every key made parsing quadratic in the file's
// size, and reloads of 10,000-vhost tables must stay fast.
type position struct{ key, val int }

// lineCol turns an offset into a 1-based line and a 1-based byte column,
// which is what vim's and emacs's error formats expect.
func lineCol(data []byte, offset int) (line, col int) {
	line = 1 + bytes.Count(data[:offset], []byte{'\n'})
	col = offset - bytes.LastIndexByte(data[:offset], '\n')
	return line, col
}

// positions maps key paths to where they are written: "vhost[1]" for a
// table header, "vhost[1].dscp" for a key, "vhost[1].match[2]" for an array
// element, `vhost[1].io_read_bps."/dev/vda"` for an inline table's key.
// Decoding into maps loses positions; this walk of the document's syntax
// tree keeps them so every problem can name its line and column. It runs
// only on documents toml.Unmarshal accepted.
func positions(data []byte) map[string]position {
	w := walker{data: data, out: map[string]position{}, arrays: map[string]int{}}
	var p unstable.Parser
	p.Reset(data)
	prefix := ""
	for p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.Table, unstable.ArrayTable:
			prefix = w.header(e)
		case unstable.KeyValue:
			w.keyValue(prefix, e)
		}
	}
	return w.out
}

type walker struct {
	data []byte
	out  map[string]position
	// arrays counts the elements of each array of tables so far, so
	// "[[vhost]]" becomes vhost[0], vhost[1]... and a later "[vhost.x]"
	// lands in the last one, as TOML says.
	arrays map[string]int
}

func (w *walker) header(e *unstable.Node) string {
	it := e.Key()
	var parts []*unstable.Node
	for it.Next() {
		parts = append(parts, it.Node())
	}
	path, base := "", ""
	for i, n := range parts {
		path = joinPath(path, string(n.Data))
		base = path
		if i == len(parts)-1 && e.Kind == unstable.ArrayTable {
			idx := w.arrays[path]
			w.arrays[path] = idx + 1
			path += "[" + strconv.Itoa(idx) + "]"
		} else if n, ok := w.arrays[path]; ok {
			path += "[" + strconv.Itoa(n-1) + "]"
		}
	}
	off := -1
	if len(parts) > 0 && parts[0].Raw.Length > 0 {
		// Point at the bracket that opens the header: column 1, usually.
		off = int(parts[0].Raw.Offset)
		for off > 0 && (w.data[off-1] == '[' || w.data[off-1] == ' ' || w.data[off-1] == '\t') {
			off--
		}
	}
	w.record(path, position{key: off, val: off})
	// The list as a whole is where its first element is, for problems
	// such as [[defaults]] written where [defaults] was meant.
	w.record(base, position{key: off, val: off})
	return path
}

// keyValue records a key, the parents a dotted key implies, and its value.
func (w *walker) keyValue(prefix string, kv *unstable.Node) {
	path := prefix
	it := kv.Key()
	keyOff, end := -1, -1
	for it.Next() {
		n := it.Node()
		path = joinPath(path, string(n.Data))
		off := -1
		if n.Raw.Length > 0 {
			off = int(n.Raw.Offset)
			end = off + int(n.Raw.Length)
		}
		if keyOff < 0 {
			keyOff = off
		}
		w.record(path, position{key: keyOff, val: -1})
	}
	w.value(path, keyOff, w.valueStart(end), kv.Value())
}

// valueStart finds the value after "key =": array nodes carry no offset of
// their own.
func (w *walker) valueStart(keyEnd int) int {
	if keyEnd < 0 {
		return -1
	}
	i := keyEnd
	for i < len(w.data) && (w.data[i] == ' ' || w.data[i] == '\t') {
		i++
	}
	if i < len(w.data) && w.data[i] == '=' {
		i++
	}
	for i < len(w.data) && (w.data[i] == ' ' || w.data[i] == '\t') {
		i++
	}
	if i >= len(w.data) {
		return -1
	}
	return i
}

func (w *walker) value(path string, keyOff, valOff int, v *unstable.Node) {
	if v == nil {
		return
	}
	if valOff < 0 && v.Raw.Length > 0 {
		valOff = int(v.Raw.Offset)
	}
	if keyOff < 0 {
		keyOff = valOff
	}
	w.out[path] = position{key: keyOff, val: valOff}
	switch v.Kind {
	case unstable.InlineTable:
		it := v.Children()
		for it.Next() {
			if kv := it.Node(); kv.Kind == unstable.KeyValue {
				w.keyValue(path, kv)
			}
		}
	case unstable.Array:
		it := v.Children()
		for i := 0; it.Next(); i++ {
			w.value(path+"["+strconv.Itoa(i)+"]", -1, -1, it.Node())
		}
	}
}

// record keeps the first place a path is written: a dotted key's parent
// is best shown where it first appears.
func (w *walker) record(path string, pos position) {
	if _, ok := w.out[path]; !ok {
		w.out[path] = pos
	}
}

// joinPath appends key parts to a path, quoting those that are not bare
// TOML keys, so the path can be pasted back into the file.
func joinPath(path string, parts ...string) string {
	for _, part := range parts {
		if path != "" {
			path += "."
		}
		path += tomlKey(part)
	}
	return path
}

// parentPath drops the last part of a path: "vhost[1].match[2]" gives
// "vhost[1].match", which gives "vhost[1]", which gives "vhost".
func parentPath(path string) string {
	last := 0 // where the last part starts
	for i := 0; i < len(path); i++ {
		switch path[i] {
		case '.':
			last = i
		case '[':
			last = i
			for i < len(path) && path[i] != ']' {
				i++
			}
		case '"':
			for i++; i < len(path) && path[i] != '"'; i++ {
				if path[i] == '\\' {
					i++
				}
			}
		}
	}
	return path[:last]
}

// headPath splits a path after its first part and index, so that
// "vhost[1].io_read_bps" gives "vhost[1]" and "io_read_bps".
func headPath(path string) (head, rest string) {
	i := 0
	if i < len(path) && path[i] == '"' {
		for i++; i < len(path) && path[i] != '"'; i++ {
			if path[i] == '\\' {
				i++
			}
		}
		i++
	} else {
		for i < len(path) && path[i] != '.' && path[i] != '[' {
			i++
		}
	}
	for i < len(path) && path[i] == '[' {
		j := strings.IndexByte(path[i:], ']')
		if j < 0 {
			break
		}
		i += j + 1
	}
	if i > len(path) {
		i = len(path)
	}
	return path[:i], strings.TrimPrefix(path[i:], ".")
}
