package failopen

import (
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

func newTable(t *testing.T) *Table {
	t.Helper()
	fd, region, err := Create()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeFd(fd) })
	tab, err := Attach(region)
	if err != nil {
		t.Fatal(err)
	}
	return tab
}

// What the keeper reads after the supervisor died is what the supervisor
// received and did not answer, however the ids fall into slots.
func TestTablePending(t *testing.T) {
	const base = 1 << 40
	for _, tc := range []struct {
		name     string
		received []uint64
		answered []uint64
		stale    map[uint64]bool
		want     []uint64
		full     uint64
	}{
		{"nothing", nil, nil, nil, nil, 0},
		{"all answered", []uint64{base, base + 1}, []uint64{base, base + 1}, nil, nil, 0},
		{"one left", []uint64{base, base + 1, base + 2}, []uint64{base, base + 2}, nil, []uint64{base + 1}, 0},
		{"same home slot", []uint64{base, base + Slots, base + 2*Slots}, []uint64{base + Slots}, nil, []uint64{base, base + 2*Slots}, 0},
		{"answered twice, or never received", []uint64{base}, []uint64{base, base, base + 7}, nil, nil, 0},
		{"a slot whose id was answered untold is reused", []uint64{base, base + Slots}, nil, map[uint64]bool{base: true}, []uint64{base + Slots}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tab := newTable(t)
			stale := func(id uint64) bool { return tc.stale[id] }
			for _, id := range tc.received {
				tab.Received(id, stale)
			}
			for _, id := range tc.answered {
				tab.Answered(id)
			}
			ids, last, _ := tab.Pending()
			slices.Sort(ids)
			if !slices.Equal(ids, tc.want) {
				t.Errorf("pending %v, want %v", ids, tc.want)
			}
			if len(tc.received) > 0 && last != tc.received[len(tc.received)-1] {
				t.Errorf("last %d, want %d", last, tc.received[len(tc.received)-1])
			}
			if tab.Full.Load() != tc.full {
				t.Errorf("full %d, want %d", tab.Full.Load(), tc.full)
			}
		})
	}
}

// A table whose probe window is taken by ids still waiting counts the id
// it cannot hold rather than overwrite one.
func TestTableFull(t *testing.T) {
	tab := newTable(t)
	for i := range probeWindow + 1 {
		tab.Received(uint64(i+1)*Slots, nil)
	}
	ids, _, _ := tab.Pending()
	if len(ids) != probeWindow || tab.Full.Load() != 1 {
		t.Errorf("%d ids held, %d not, want %d and 1", len(ids), tab.Full.Load(), probeWindow)
	}
}

// The keeper sees what the supervisor wrote: the same memory, through the
// memfd passed between them.
func TestTableShared(t *testing.T) {
	fd, region, err := Create()
	if err != nil {
		t.Fatal(err)
	}
	defer closeFd(fd)
	writer, _ := Attach(region)
	other, err := Map(fd)
	if err != nil {
		t.Fatal(err)
	}
	reader, _ := Attach(other)
	writer.Received(42, nil)
	writer.AddHeld(4)
	writer.AddHeld(-1)
	ids, last, held := reader.Pending()
	if !slices.Equal(ids, []uint64{42}) || last != 42 || held != 3 {
		t.Errorf("reader sees %v, last %d, held %d; want [42], 42, 3", ids, last, held)
	}
	reader.Clear()
	if ids, _, _ := writer.Pending(); len(ids) != 0 {
		t.Errorf("after Clear the writer still sees %v", ids)
	}
	if _, err := Attach(make([]byte, 8)); err == nil {
		t.Error("a region too small was accepted")
	}
}

func closeFd(fd int) { unix.Close(fd) }
