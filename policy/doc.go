// Package policy is the QoS table: it parses the TOML file operators write,
// validates every value and reports each problem with its line and key, and
// turns a valid file into an immutable Table the supervisor takes snapshots of.
package policy
