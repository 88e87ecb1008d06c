package failopen

import (
	"errors"
	"fmt"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TableSize is the size in bytes of the shared memory a Table lives in:
// a 64-byte header and Slots ids of 8 bytes.
const TableSize = headerSize + Slots*8

// Slots is how many notifications a Table can hold at once: far more than
// a server has threads blocked in intercepted syscalls.
const Slots = 16384

const headerSize = 64

// Table records the ids of the notifications a supervisor has received and
// not yet answered, in a region of memory shared with the keeper. Ids are
// the kernel's (struct seccomp_notif.id): unique for the life of the
// filter, never 0 in practice (the kernel starts them at a random 64-bit
// value and counts up), so 0 marks a free slot.
//
// Only one process writes a Table (the supervisor) and the keeper reads it
// only after that process is gone; stores are atomic so that a supervisor
// killed mid-store leaves either the old or the new id, never half of one.
type Table struct {
	last  *atomic.Uint64 // header: the newest id received
	held  *atomic.Int64  // header: connections accepted, not handed over
	slots []atomic.Uint64
	// Full counts ids that found no free slot (held but not recorded).
	Full atomic.Uint64
}

// Attach makes a Table of region, which must be TableSize bytes of shared
// memory (MAP_SHARED) aligned to 8 bytes, as Map returns. A region of
// zeros is an empty table.
func Attach(region []byte) (*Table, error) {
	if len(region) < TableSize {
		return nil, fmt.Errorf("failopen: table region is %d bytes, want %d", len(region), TableSize)
	}
	base := unsafe.Pointer(&region[0])
	if uintptr(base)%8 != 0 {
		return nil, errors.New("failopen: table region is not 8-byte aligned")
	}
	return &Table{
		last:  (*atomic.Uint64)(base),
		held:  (*atomic.Int64)(unsafe.Add(base, 8)),
		slots: unsafe.Slice((*atomic.Uint64)(unsafe.Add(base, headerSize)), Slots),
	}, nil
}

// Create makes the shared memory for a Table: a memfd of TableSize bytes
// (to pass to the supervisor) and its mapping in this process.
func Create() (fd int, region []byte, err error) {
	fd, err = unix.MemfdCreate("vhqos-in-flight", unix.MFD_CLOEXEC)
	if err != nil {
		return -1, nil, fmt.Errorf("creating the in-flight table: %w", err)
	}
	if err := unix.Ftruncate(fd, TableSize); err != nil {
		unix.Close(fd)
		return -1, nil, fmt.Errorf("sizing the in-flight table: %w", err)
	}
	region, err = Map(fd)
	if err != nil {
		unix.Close(fd)
		return -1, nil, err
	}
	return fd, region, nil
}

// Map maps the Table memory of memfd fd (made by Create) into this process.
func Map(fd int) ([]byte, error) {
	region, err := unix.Mmap(fd, 0, TableSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mapping the in-flight table: %w", err)
	}
	return region, nil
}

// Received records id as received and not yet answered, in the first free
// slot of the probe window from id's home slot. stale, if not nil, reports
// whether an id already there was answered without the table being told
// (its slot is then reused); the supervisor passes
// SECCOMP_IOCTL_NOTIF_ID_VALID. It never blocks and allocates nothing.
func (t *Table) Received(id uint64, stale func(uint64) bool) {
	t.last.Store(id)
	home := int(id % Slots)
	for i := range probeWindow {
		slot := &t.slots[(home+i)%Slots]
		if old := slot.Load(); old == 0 || stale != nil && stale(old) {
			slot.Store(id)
			return
		}
	}
	t.Full.Add(1)
}

// probeWindow is how many slots from its home an id may sit in. Ids of
// notifications in flight at once are close to each other (the kernel
// counts them up), so they rarely share a home.
const probeWindow = 64

// Answered forgets id: it was answered, or no longer needs to be.
func (t *Table) Answered(id uint64) {
	home := int(id % Slots)
	for i := range probeWindow {
		if slot := &t.slots[(home+i)%Slots]; slot.Load() == id {
			slot.Store(0)
			return
		}
	}
}

// Last returns the newest id received: a supervisor whose Last stays put
// while notifications wait is not receiving.
func (t *Table) Last() uint64 { return t.last.Load() }

// AddHeld adds d to how many connections the supervisor holds accepted and
// not handed over (the ones lost if it dies) and returns the new count.
// Callers on several threads may add at once.
func (t *Table) AddHeld(d int64) int64 { return t.held.Add(d) }

// HeldNow returns how many connections the supervisor holds now.
func (t *Table) HeldNow() int64 { return t.held.Load() }

// Pending returns the ids in the table, the newest id received and the
// connections held, as the writer left them.
func (t *Table) Pending() (ids []uint64, last uint64, held int64) {
	for i := range t.slots {
		if id := t.slots[i].Load(); id != 0 {
			ids = append(ids, id)
		}
	}
	return ids, t.last.Load(), t.held.Load()
}

// Clear empties the table for the next writer.
func (t *Table) Clear() {
	for i := range t.slots {
		t.slots[i].Store(0)
	}
	t.last.Store(0)
	t.held.Store(0)
	t.Full.Store(0)
}
