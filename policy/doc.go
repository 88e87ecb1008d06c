// Package policy is the QoS table: it parses the TOML file operators write
// (REFERENCE.md describes every key), validates every value and reports each
// problem with its line, column and key, all of them at once, and turns a
// valid file into an immutable Table that the supervisor classifies
// connections with and swaps whole on reload.
//
// Parse and Load return Problems on a bad table; Table.Marshal writes a
// table back as canonical TOML that parses to an equal Table. Block device
// paths are resolved when the table is read (LookupBlockDevice, replaceable
// with WithDeviceLookup), so a table naming a missing disk is refused before
// anything is applied.
package policy
