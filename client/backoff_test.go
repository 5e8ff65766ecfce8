package client

import (
	"math/rand/v2"
	"testing"
	"time"
)

func TestBackoffFullJitter(t *testing.T) {
	const base, max = 100 * time.Millisecond, 5 * time.Second
	for n := range 20 {
		ceil := min(max, base<<n)
		seen := map[time.Duration]bool{}
		var sum time.Duration
		const samples = 2000
		for range samples {
			d := backoff(n, base, max, nil)
			if d < 0 || d > ceil {
				t.Fatalf("attempt %d: delay %v outside [0, %v]", n, d, ceil)
			}
			seen[d] = true
			sum += d
		}
		if len(seen) < samples/2 {
			t.Errorf("attempt %d: only %d distinct delays in %d", n, len(seen), samples)
		}
		// Full jitter: the mean is about half the ceiling.
		if mean := sum / samples; mean < ceil*4/10 || mean > ceil*6/10 {
			t.Errorf("attempt %d: mean delay %v, want about %v", n, mean, ceil/2)
		}
	}
	// The bounds are reachable, and the ceiling grows then stays at max.
	if d := backoff(3, base, max, func() float64 { return 0 }); d != 0 {
		t.Errorf("rnd 0: %v", d)
	}
	top := func() float64 { return 1 - 1e-12 }
	for n, want := range []time.Duration{base, 2 * base, 4 * base, 8 * base, 16 * base, 32 * base, max, max} {
		if d := backoff(n, base, max, top); d != want {
			t.Errorf("attempt %d: top delay %v, want %v", n, d, want)
		}
	}
	if d := backoff(1000, base, max, top); d != max {
		t.Errorf("attempt 1000: %v, want %v", d, max)
	}
	if d := backoff(2, 0, max, rand.Float64); d != 0 {
		t.Errorf("zero base: %v", d)
	}
}
