package shaper

import (
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"
)

// ClassStats are the kernel's counters of one class (tc -s class show),
// added up over the devices.
type ClassStats struct {
	// Bytes and Packets the class sent (dequeued to the device), with
	// their link-layer headers.
	Bytes, Packets uint64
	// Drops counts packets dropped because the class's queue was full.
	Drops uint64
	// Overlimits counts the times a packet of the class had to wait
	// because the class was over its rate: how often egress_rate held
	// the vhost back.
	Overlimits uint64
	// Backlog is the bytes queued in the class now.
	Backlog uint64
}

// Stats returns the counters of vhqos's classes by minor, summed over the
// devices. An inner class (a tenant's) counts what every class inside it
// sent. Devices that are gone or not vhqos's count nothing; other errors
// are joined, with what could be read.
func Stats(devices []string) (map[uint16]ClassStats, error) {
	out := map[uint16]ClassStats{}
	var errs []error
	for _, dev := range devices {
		link, err := netlink.LinkByName(dev)
		if err != nil {
			continue
		}
		classes, err := netlink.ClassList(link, rootHandle)
		if err != nil {
			errs = append(errs, fmt.Errorf("reading the counters of vhqos's classes on %s: %w", dev, err))
			continue
		}
		for _, c := range classes {
			a := c.Attrs()
			major, minor := netlink.MajorMinor(a.Handle)
			if _, ours := parentMinor(a.Parent); c.Type() != "htb" || major != Major || !ours || a.Statistics == nil {
				continue
			}
			s := out[minor]
			if b := a.Statistics.Basic; b != nil {
				s.Bytes += b.Bytes
				s.Packets += uint64(b.Packets)
			}
			if q := a.Statistics.Queue; q != nil {
				s.Drops += uint64(q.Drops)
				s.Overlimits += uint64(q.Overlimits)
				s.Backlog += uint64(q.Backlog)
			}
			out[minor] = s
		}
	}
	return out, errors.Join(errs...)
}
