package supervisor

import "testing"

func TestRateLimit(t *testing.T) {
	var r rateLimit
	got := []bool{r.Allow(), r.Allow(), r.Allow()}
	if !got[0] || got[1] || got[2] {
		t.Errorf("Allow() three times at once = %v, want true false false", got)
	}
	r.last.Store(1) // long ago
	if !r.Allow() {
		t.Error("Allow() after the interval = false")
	}
}
