package itest

import (
	"testing"
)

// TestMain runs the tests in a network and mount namespace of their own
// (see Main).
func TestMain(m *testing.M) { Main(m) }

// vhqosBinary is the vhqos under test (see VhqosBinary); the test fails if
// there is none.
func vhqosBinary(t *testing.T) string {
	t.Helper()
	bin, err := VhqosBinary()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}
