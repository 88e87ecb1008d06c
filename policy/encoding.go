package policy

import (
	"bytes"
	"fmt"
	"strings"
	"unicode/utf8"
)

// utf8BOM is U+FEFF in UTF-8, which Windows Notepad and PowerShell put at
// the start of the files they save.
const utf8BOM = "\xEF\xBB\xBF"

// Blank reports whether a table file holds nothing but white space, after
// a byte order mark if it has one: what an editor that truncates before it
// writes leaves half way, which a reload must not take for a wish to drop
// every vhost.
func Blank(data []byte) bool {
	return len(bytes.TrimSpace(bytes.TrimPrefix(data, []byte(utf8BOM)))) == 0
}

// decodeText returns the TOML text of a file: UTF-8, as TOML requires
// (toml.io, v1.0.0: "A TOML file must be a valid UTF-8 encoded Unicode
// document"), without its byte order mark if it has one (the spec allows
// it; the TOML parser does not take it). Dropping the mark is also what
// editors do, so line 1, column 1 is where they put it. Files in another
// encoding are refused with a Problem that names the encoding and how to
// convert the file.
func decodeText(filename string, data []byte) ([]byte, *Problem) {
	if rest, ok := bytes.CutPrefix(data, []byte(utf8BOM)); ok {
		data = rest
	}
	if enc, iconvName, bom := wideEncoding(data); enc != "" {
		// vim reads such files right only by their mark.
		return nil, &Problem{File: filename, Msg: fmt.Sprintf(
			"the file is %s, not UTF-8 as TOML requires; convert it: %s",
			enc, convertHint(filename, iconvName, bom))}
	}
	if off := invalidUTF8(data); off >= 0 {
		line, col := lineCol(data, off)
		return nil, &Problem{File: filename, Line: line, Column: col, Msg: fmt.Sprintf(
			"byte 0x%02X is not UTF-8, which TOML requires: the file is in an 8-bit encoding, probably Latin-1 (ISO-8859-1) or Windows-1252; convert it: %s (if it is another encoding, name it after -f; iconv -l lists them)",
			data[off], convertHint(filename, "WINDOWS-1252", true))}
	}
	if off := strayBOM(data); off >= 0 {
		line, col := lineCol(data, off)
		return nil, &Problem{File: filename, Line: line, Column: col, Msg: fmt.Sprintf(
			"a byte order mark (U+FEFF) at the start of a line, as joining two files that have one leaves (cat a.toml b.toml); delete it: sed -i '1,$s/^\\xEF\\xBB\\xBF//' %s", shellWord(filename))}
	}
	return data, nil
}

// strayBOM returns the offset of a byte order mark that starts a line (the
// first one was already dropped), or -1. Where a key or a table header
// must start, the parser would only say it met an invalid character. One
// after other text on its line (in a string or a comment) is text and left
// alone.
func strayBOM(data []byte) int {
	for off := 0; off < len(data); {
		if bytes.HasPrefix(data[off:], []byte(utf8BOM)) {
			return off
		}
		nl := bytes.IndexByte(data[off:], '\n')
		if nl < 0 {
			return -1
		}
		off += nl + 1
	}
	return -1
}

// wideEncoding recognises UTF-16 and UTF-32, with a byte order mark or
// without one. Without one, the NUL bytes give them away, the way RFC 4627
// section 3 tells JSON's encodings apart: a TOML file is mostly ASCII, and
// valid UTF-8 TOML has no NUL at all (TOML allows no control character
// but tab outside of escapes). It returns the encoding in words, its
// iconv name and whether the file has a mark, or "" for neither encoding.
func wideEncoding(data []byte) (words, iconv string, bom bool) {
	const mark = ", with a byte order mark"
	switch {
	case bytes.HasPrefix(data, []byte{0xFF, 0xFE, 0, 0}):
		return "UTF-32 (little-endian" + mark + ")", "UTF-32", true
	case bytes.HasPrefix(data, []byte{0, 0, 0xFE, 0xFF}):
		return "UTF-32 (big-endian" + mark + ")", "UTF-32", true
	case bytes.HasPrefix(data, []byte{0xFF, 0xFE}):
		return "UTF-16 (little-endian" + mark + `, as Windows Notepad and PowerShell save "Unicode")`, "UTF-16", true
	case bytes.HasPrefix(data, []byte{0xFE, 0xFF}):
		return "UTF-16 (big-endian" + mark + ")", "UTF-16", true
	}
	if bytes.IndexByte(data, 0) < 0 {
		return "", "", false
	}
	// Count NULs by position in each group of 4 bytes, over the start of
	// the file: an ASCII character is "c 0 0 0" in UTF-32LE, "0 0 0 c" in
	// UTF-32BE, "c 0" in UTF-16LE and "0 c" in UTF-16BE.
	n := min(len(data), 4096) &^ 3
	if n == 0 {
		return "", "", false
	}
	var zeros [4]int
	for i := 0; i < n; i++ {
		if data[i] == 0 {
			zeros[i&3]++
		}
	}
	quads := n / 4
	mostly := func(k int) bool { return zeros[k]*10 >= quads*9 }
	rarely := func(k int) bool { return zeros[k]*10 <= quads }
	const nomark = ", without a byte order mark)"
	switch {
	case mostly(1) && mostly(2) && mostly(3) && rarely(0):
		return "UTF-32 (little-endian" + nomark, "UTF-32LE", false
	case mostly(0) && mostly(1) && mostly(2) && rarely(3):
		return "UTF-32 (big-endian" + nomark, "UTF-32BE", false
	case (zeros[1]+zeros[3])*2 >= quads && rarely(0) && rarely(2):
		return "UTF-16 (little-endian" + nomark, "UTF-16LE", false
	case (zeros[0]+zeros[2])*2 >= quads && rarely(1) && rarely(3):
		return "UTF-16 (big-endian" + nomark, "UTF-16BE", false
	}
	return "", "", false
}

// invalidUTF8 returns the offset of the first byte that is not UTF-8, or
// -1.
func invalidUTF8(data []byte) int {
	for off := 0; off < len(data); {
		r, size := utf8.DecodeRune(data[off:])
		if r == utf8.RuneError && size <= 1 {
			return off
		}
		off += size
	}
	return -1
}

// convertHint says how to turn the file into UTF-8: with iconv, and, when
// vim reads the file right (it detects byte order marks and falls back to
// Latin-1), with vim.
func convertHint(filename, from string, vimReadsIt bool) string {
	f := shellWord(filename)
	hint := fmt.Sprintf("iconv -f %s -t UTF-8 %s > %s.new && mv %s.new %s", from, f, f, f, f)
	if vimReadsIt {
		hint += ", or in vim :set fileencoding=utf-8 nobomb | w"
	}
	return hint
}

// shellWord quotes s for a POSIX shell unless it needs no quoting, so the
// hint can be pasted as it is.
func shellWord(s string) string {
	safe := s != ""
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("/._-+,:@%=", c)) {
			safe = false
			break
		}
	}
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
