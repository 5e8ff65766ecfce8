// Package origin decides which browser origins may use roomwire's endpoints.
//
// A Checker is immutable after New and safe for concurrent use.
package origin

import (
	"net/http"
	"net/url"
	"path"
	"strings"
)

// Checker allows requests with no Origin header (non-browser clients, which
// cannot be driven by another site), requests whose Origin names the host
// they were sent to, and origins in its allow list. Everything else,
// including the opaque origin "null", is refused.
type Checker struct {
	allowed []string
}

// New returns a Checker with an allow list of origins such as
// "https://app.example.com" or patterns such as "https://*.example.com"
// (path.Match syntax over the whole origin); "*" allows every origin, the
// opaque origin "null" included.
func New(allowed []string) *Checker {
	c := &Checker{}
	for _, a := range allowed {
		c.allowed = append(c.allowed, strings.ToLower(strings.TrimRight(a, "/")))
	}
	return c
}

// Allow reports whether r's Origin may use the endpoint.
func (c *Checker) Allow(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		return true
	}
	o = strings.ToLower(o)
	if u, err := url.Parse(o); err == nil && u.Host != "" && strings.EqualFold(u.Host, r.Host) {
		return true
	}
	for _, a := range c.allowed {
		if a == "*" || a == o {
			return true
		}
		if ok, _ := path.Match(a, o); ok {
			return true
		}
	}
	return false
}
