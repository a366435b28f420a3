package server

import (
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/flowdhq/flowd/cmd/internal/wire"
)

// fillPath gives a route's wildcards harmless values.
func fillPath(rt wire.Route) string {
	p := rt.Pattern
	for {
		i := strings.IndexByte(p, '{')
		if i < 0 {
			return p
		}
		j := strings.IndexByte(p, '}')
		p = p[:i] + "x" + p[j+1:]
	}
}

// bodyFor gives POST routes a well-formed body that names nothing real.
func bodyFor(rt wire.Route) any {
	switch rt.Name {
	case wire.RouteStart:
		return wire.StartRequest{Provider: "no-such-provider"}
	case wire.RouteCallback:
		return wire.CallbackRequest{State: "no-such-state", Code: "x"}
	}
	return nil
}

// TestPolicyMatrix calls every route as every principal, over the listener
// that principal really uses, and checks the policy table decides: denied
// pairs get 401/403 in the error shape and never reach the engine; allowed
// pairs get past authorization. Driven by wire.Routes, so a new route is
// covered the moment it exists.
func TestPolicyMatrix(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	other := 1 << 30
	strangers := newHarness(t, harnessOpts{uid: &other})

	call := map[Principal]func(rt wire.Route) resp{
		Local: func(rt wire.Route) resp { return h.local(rt.Method, fillPath(rt), bodyFor(rt)) },
		Gateway: func(rt wire.Route) resp {
			return h.gateway(rt.Method, fillPath(rt), bodyFor(rt))
		},
		Browser: func(rt wire.Route) resp {
			var b any = bodyFor(rt)
			if b == nil {
				return h.browser(rt.Method, fillPath(rt), nil)
			}
			return h.do(h.web, "http://"+h.tcp, rt.Method, fillPath(rt), b, nil)
		},
		Stranger: func(rt wire.Route) resp {
			return strangers.local(rt.Method, fillPath(rt), bodyFor(rt))
		},
	}
	assert.Len(t, call, len(Principals), "every principal is exercised")

	for _, rt := range wire.Routes {
		for _, p := range Principals {
			t.Run(rt.Name+"/"+string(p), func(t *testing.T) {
				eng := h.counting
				if p == Stranger {
					eng = strangers.counting
				}
				before := eng.calls.Load()
				r := call[p](rt)
				if Allowed(rt.Name, p) {
					assert.NotContains(t, []int{http.StatusUnauthorized, http.StatusForbidden}, r.status,
						"%s may call %s but got %d: %s", p, rt.Name, r.status, r.body)
					return
				}
				assert.Contains(t, []int{http.StatusUnauthorized, http.StatusForbidden}, r.status,
					"%s may not call %s but got %d: %s", p, rt.Name, r.status, r.body)
				assert.Contains(t, []string{wire.CodeUnauthorized, wire.CodeForbidden}, r.errCode())
				assert.Equal(t, before, eng.calls.Load(), "a refused request reached the engine")
			})
		}
	}
}

// The table itself: deny by default, and exactly the grants the spec gives.
func TestPolicyTable(t *testing.T) {
	for _, rt := range wire.Routes {
		assert.Contains(t, Policy, rt.Name, "route %s has no policy entry", rt.Name)
		assert.True(t, Allowed(rt.Name, Local), "local may do everything: %s", rt.Name)
		assert.False(t, Allowed(rt.Name, Stranger), "a stranger may do nothing: %s", rt.Name)
	}
	var gw, br []string
	for _, rt := range wire.Routes {
		if Allowed(rt.Name, Gateway) {
			gw = append(gw, rt.Name)
		}
		if Allowed(rt.Name, Browser) {
			br = append(br, rt.Name)
		}
	}
	assert.ElementsMatch(t, []string{wire.RouteCallback, wire.RouteStatus}, gw)
	assert.ElementsMatch(t, []string{wire.RouteBrowserCallback, wire.RouteLaunch, wire.RoutePreflight}, br)
	assert.False(t, Allowed("no-such-route", Local), "unknown routes are denied")
}
