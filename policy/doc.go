// Package policy is the QoS table: it parses the TOML file operators write
// (REFERENCE.md describes every key), validates every value and reports each
// problem with its line, column and key, all of them at once, and turns a
// valid file into an immutable Table that the supervisor classifies
// connections with and swaps whole on reload.
//
// Parse and Load return Problems on a bad table; Table.Marshal writes a
// table back as canonical TOML that parses to an equal Table. Devices are
// resolved when the table is read (cgroup.ResolveDevice, replaceable with
// WithDeviceResolver), so a partition is refused before anything is applied,
// and a limit on a device this machine lacks is skipped with a warning
// (Table.Warnings). Files are UTF-8, with or without a byte order mark;
// other encodings are refused by name. Each class's connection caps
// (Class.Admission) are checked across classes when the table is read: an
// over_limit names a class that exists, and chains of alternates end.
package policy
