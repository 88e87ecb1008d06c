package main

import (
	"io"
	"strings"
	"testing"
)

// TestTableInForceReadFromStart: the keeper's memfd is one open file
// shared by every supervisor it starts, its offset at the end after the
// keeper wrote it; a supervisor started after a crash must still read the
// whole table, not an empty one (which would drop every vhost).
func TestTableInForceReadFromStart(t *testing.T) {
	const table = "[[vhost]]\nname = \"shop\"\nmatch = [\"127.0.0.2\"]\n"
	f, err := tableMemfd([]byte(table))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for i, offset := range []int64{0, int64(len(table)), 5} {
		if _, err := f.Seek(offset, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		raw, err := readTableInForce(f)
		if err != nil || string(raw) != table {
			t.Errorf("read %d, with the offset at %d: %q, %v; want the whole table", i, offset, raw, err)
		}
	}
	empty, err := tableMemfd(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer empty.Close()
	if _, err := readTableInForce(empty); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Errorf("an empty table in force read as %v, want an error saying it is empty", err)
	}
}
