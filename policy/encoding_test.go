package policy

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"unicode/utf16"
)

// encodingTable uses a non-ASCII character (in a comment) so that the
// encodings differ in more than their NUL bytes.
const encodingTable = `# Größen: café
[defaults]
cpu_weight = 100

[[vhost]]
name = "shop"
match = ["192.0.2.10", "shop.example.com"]
io_read_bps = { "/dev/vda" = "50M" }
dscp = "AF41"
`

func utf16Bytes(s string, order binary.AppendByteOrder, bom bool) []byte {
	var b []byte
	if bom {
		b = order.AppendUint16(b, 0xFEFF)
	}
	for _, u := range utf16.Encode([]rune(s)) {
		b = order.AppendUint16(b, u)
	}
	return b
}

func utf32Bytes(s string, order binary.AppendByteOrder, bom bool) []byte {
	var b []byte
	if bom {
		b = order.AppendUint32(b, 0xFEFF)
	}
	for _, r := range s {
		b = order.AppendUint32(b, uint32(r))
	}
	return b
}

// latin1 encodes s, which must be in Latin-1's range, one byte a rune.
func latin1(s string) []byte {
	var b []byte
	for _, r := range s {
		b = append(b, byte(r))
	}
	return b
}

// A table saved with a byte order mark, or with CRLF line ends, is the
// same table; one in another encoding is refused with a message naming the
// encoding and how to convert the file.
func TestEncodings(t *testing.T) {
	want, err := parse(t, encodingTable)
	if err != nil {
		t.Fatal(err)
	}
	crlf := strings.ReplaceAll(encodingTable, "\n", "\r\n")
	bom := "\xEF\xBB\xBF"
	le, be := binary.LittleEndian, binary.BigEndian
	for _, tc := range []struct {
		name string
		data []byte
		// want is "" for a good table, else the whole message, or its
		// start when it ends in "...".
		want string
	}{
		{"UTF-8", []byte(encodingTable), ""},
		{"UTF-8 with a byte order mark", []byte(bom + encodingTable), ""},
		{"CRLF", []byte(crlf), ""},
		{"CRLF with a byte order mark (Notepad)", []byte(bom + crlf), ""},
		{"UTF-16LE with a byte order mark (PowerShell)", utf16Bytes(crlf, le, true),
			`qos.toml: the file is UTF-16 (little-endian, with a byte order mark, as Windows Notepad and PowerShell save "Unicode"), not UTF-8 as TOML requires; convert it: iconv -f UTF-16 -t UTF-8 qos.toml > qos.toml.new && mv qos.toml.new qos.toml, or in vim :set fileencoding=utf-8 nobomb | w`},
		{"UTF-16BE with a byte order mark", utf16Bytes(encodingTable, be, true),
			`qos.toml: the file is UTF-16 (big-endian, with a byte order mark), not UTF-8 as TOML requires; convert it: iconv -f UTF-16 -t UTF-8 qos.toml > qos.toml.new && mv qos.toml.new qos.toml, or in vim :set fileencoding=utf-8 nobomb | w`},
		{"UTF-16LE", utf16Bytes(encodingTable, le, false),
			`qos.toml: the file is UTF-16 (little-endian, without a byte order mark), not UTF-8 as TOML requires; convert it: iconv -f UTF-16LE -t UTF-8 qos.toml > qos.toml.new && mv qos.toml.new qos.toml`},
		{"UTF-16BE", utf16Bytes(encodingTable, be, false),
			`qos.toml: the file is UTF-16 (big-endian, without a byte order mark), not UTF-8 as TOML requires; convert it: iconv -f UTF-16BE -t UTF-8 qos.toml > qos.toml.new && mv qos.toml.new qos.toml`},
		{"UTF-32LE with a byte order mark", utf32Bytes(encodingTable, le, true),
			`qos.toml: the file is UTF-32 (little-endian, with a byte order mark), not UTF-8 as TOML requires; convert it: iconv -f UTF-32 -t UTF-8 qos.toml > qos.toml.new && mv qos.toml.new qos.toml, or in vim :set fileencoding=utf-8 nobomb | w`},
		{"UTF-32BE with a byte order mark", utf32Bytes(encodingTable, be, true),
			`qos.toml: the file is UTF-32 (big-endian, with a byte order mark), not UTF-8 as TOML requires; convert it: iconv -f UTF-32 -t UTF-8 qos.toml > qos.toml.new && mv qos.toml.new qos.toml, or in vim :set fileencoding=utf-8 nobomb | w`},
		{"UTF-32LE", utf32Bytes(encodingTable, le, false),
			`qos.toml: the file is UTF-32 (little-endian, without a byte order mark), not UTF-8 as TOML requires; convert it: iconv -f UTF-32LE -t UTF-8 qos.toml > qos.toml.new && mv qos.toml.new qos.toml`},
		{"UTF-32BE", utf32Bytes(encodingTable, be, false),
			`qos.toml: the file is UTF-32 (big-endian, without a byte order mark), not UTF-8 as TOML requires; convert it: iconv -f UTF-32BE -t UTF-8 qos.toml > qos.toml.new && mv qos.toml.new qos.toml`},
		// ö is byte 0xF6 in Latin-1, at line 1, column 5 (bytes).
		{"Latin-1", latin1(encodingTable),
			`qos.toml:1:5: byte 0xF6 is not UTF-8, which TOML requires: the file is in an 8-bit encoding, probably Latin-1 (ISO-8859-1) or Windows-1252; convert it: iconv -f WINDOWS-1252 -t UTF-8 qos.toml > qos.toml.new && mv qos.toml.new qos.toml, or in vim :set fileencoding=utf-8 nobomb | w (if it is another encoding, name it after -f; iconv -l lists them)`},
		// Counted after the mark, as editors count.
		{"Latin-1 with a UTF-8 byte order mark", append([]byte(bom), latin1(crlf)...), "qos.toml:1:5: byte 0xF6 is not UTF-8..."},
		// Counted after the first mark, as editors count.
		{"two files joined, each with a byte order mark", []byte(bom + encodingTable + bom + "[defaults]\ncpu_weight = 100\n"),
			fmt.Sprintf(`qos.toml:%d:1: a byte order mark (U+FEFF) at the start of a line, as joining two files that have one leaves (cat a.toml b.toml); delete it: sed -i '1,$s/^\xEF\xBB\xBF//' qos.toml`, strings.Count(encodingTable, "\n")+1)},
		{"two byte order marks", []byte(bom + bom + encodingTable), "qos.toml:1:1: a byte order mark (U+FEFF) at the start of a line..."},
		{"a byte order mark after other text is text", []byte(encodingTable + "# a comment \xEF\xBB\xBF\n"), ""},
		{"Windows-1252 in a string", []byte("[[vhost]]\nname = \"caf\x80\"\nmatch = [\"192.0.2.1\"]\n"), "qos.toml:2:12: byte 0x80 is not UTF-8..."},
		{"a truncated UTF-8 sequence", []byte("[defaults]\n# \xC3"), "qos.toml:2:3: byte 0xC3 is not UTF-8..."},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parse(t, string(tc.data))
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(got, want) {
					t.Errorf("table = %+v\nwant the same as in plain UTF-8: %+v", got, want)
				}
				return
			}
			var ps Problems
			if !errors.As(err, &ps) || len(ps) != 1 {
				t.Fatalf("err = %v, want one problem", err)
			}
			if start, ok := strings.CutSuffix(tc.want, "..."); ok && !strings.HasPrefix(ps[0].String(), start) || !ok && ps[0].String() != tc.want {
				t.Errorf("problem = %s\nwant        %s", ps[0], tc.want)
			}
		})
	}
}

// Lines and columns of problems in a file with a byte order mark are the
// ones an editor shows, which hides the mark: those of the same file
// without it. Errors on line 1 show it best.
func TestPositionsAfterByteOrderMark(t *testing.T) {
	for _, src := range []string{
		"cpu_wieght = 1\n",                      // a key above any section
		"[defaultz]\ncpu_weight = 1\n",          // an unknown section at 1:1
		"[[vhost]]\nname = \"a\"\nmatch = []\n", // at its value
		"x = = 1\n",                             // TOML syntax
		"[defaults]\r\ncpu_weight = 0\r\ndscp = \"AF44\"\r\n",
	} {
		_, plain := parse(t, src)
		_, marked := parse(t, "\xEF\xBB\xBF"+src)
		if plain == nil || marked == nil {
			t.Fatalf("%q: no problem found (%v, %v)", src, plain, marked)
		}
		if plain.Error() != marked.Error() {
			t.Errorf("%q with a byte order mark:\n%v\nwithout:\n%v", src, marked, plain)
		}
	}
	_, err := parse(t, "\xEF\xBB\xBF[defaultz]\n")
	if want := "qos.toml:1:1: defaultz: unknown section"; err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("err = %v, want %q...", err, want)
	}
}

// A file name that a shell would split is quoted in the hint.
func TestConvertHintQuotesFileName(t *testing.T) {
	_, err := Parse("/etc/vhqos/my qos's.toml", utf16Bytes("[defaults]\n", binary.LittleEndian, true))
	want := `iconv -f UTF-16 -t UTF-8 '/etc/vhqos/my qos'\''s.toml' > '/etc/vhqos/my qos'\''s.toml'.new && mv '/etc/vhqos/my qos'\''s.toml'.new '/etc/vhqos/my qos'\''s.toml'`
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("err = %v\nwant it to contain %s", err, want)
	}
}

// NUL bytes alone do not make a file UTF-16: a valid file has none, and a
// file with a stray one gets the TOML parser's message, not a wrong name.
func TestStrayNULIsNotUTF16(t *testing.T) {
	_, err := parse(t, "[defaults]\ncpu_weight = 1\x00\n")
	if err == nil || strings.Contains(err.Error(), "UTF-16") || strings.Contains(err.Error(), "UTF-32") {
		t.Errorf("err = %v, want a TOML syntax error", err)
	}
	if enc, _, _ := wideEncoding(bytes.Repeat([]byte{'a', 0}, 3)); enc == "" {
		t.Errorf("short UTF-16LE file not recognised")
	}
}

func TestBlank(t *testing.T) {
	for _, tc := range []struct {
		data string
		want bool
	}{
		{"", true},
		{" \r\n\t\n", true},
		{"\xEF\xBB\xBF", true},
		{"\xEF\xBB\xBF\r\n", true},
		{"# a comment\n", false},
		{"\xEF\xBB\xBF[defaults]\n", false},
		{"\xEF\xBB\xBF\xEF\xBB\xBF", false}, // a second mark is content (and refused by Parse)
	} {
		if got := Blank([]byte(tc.data)); got != tc.want {
			t.Errorf("Blank(%q) = %v, want %v", tc.data, got, tc.want)
		}
	}
}
