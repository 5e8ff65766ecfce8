package client

import (
	"math/rand/v2"
	"time"
)

// backoff returns the delay before reconnect attempt n (0 for the first
// retry after a drop): exponential backoff with full jitter, a uniformly
// random duration in [0, min(max, base*2^n)]. rnd returns a uniform float
// in [0, 1); nil means math/rand/v2.
func backoff(n int, base, max time.Duration, rnd func() float64) time.Duration {
	if base <= 0 || max <= 0 {
		return 0
	}
	ceil := base
	for i := 0; i < n && ceil < max; i++ {
		ceil *= 2 // no overflow: ceil < max before doubling
	}
	ceil = min(ceil, max)
	if rnd == nil {
		rnd = rand.Float64
	}
	// rnd is in [0, 1); scale so that the ceiling itself is reachable.
	return min(time.Duration(rnd()*float64(ceil+1)), ceil)
}
