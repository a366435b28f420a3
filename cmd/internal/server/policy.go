package server

import "github.com/flowdhq/flowd/cmd/internal/wire"

// Principal is who is calling, decided by the listener a request came in on
// and what it carries. It is never taken from request input alone.
type Principal string

// The principals.
const (
	// Local is a unix-socket peer whose uid is flowd's (SO_PEERCRED).
	Local Principal = "local"
	// Gateway is a caller on the TCP listener with the service token.
	Gateway Principal = "svc_gateway"
	// Browser is an unauthenticated caller on the TCP listener.
	Browser Principal = "browser"
	// Stranger is a unix-socket peer with another uid, or one whose
	// credentials could not be read. It may do nothing.
	Stranger Principal = "stranger"
)

// Principals lists every principal, for the policy tests.
var Principals = []Principal{Local, Gateway, Browser, Stranger}

// Policy is the one authorization table: route name -> principals allowed.
// A route or principal missing here is denied: deny by default.
var Policy = map[string][]Principal{
	wire.RouteStart:           {Local},
	wire.RouteList:            {Local},
	wire.RouteStatus:          {Local, Gateway},
	wire.RouteCancel:          {Local},
	wire.RouteHistory:         {Local},
	wire.RouteExport:          {Local},
	wire.RouteCallback:        {Local, Gateway},
	wire.RouteProviders:       {Local},
	wire.RouteToken:           {Local},
	wire.RouteDisconnect:      {Local},
	wire.RouteConnections:     {Local},
	wire.RouteHealth:          {Local},
	wire.RouteReload:          {Local},
	wire.RouteMetrics:         {Local},
	wire.RouteBrowserCallback: {Local, Browser},
	wire.RouteLaunch:          {Local, Browser},
	wire.RoutePreflight:       {Local, Browser},
}

// Allowed reports whether p may call the route named route.
func Allowed(route string, p Principal) bool {
	for _, q := range Policy[route] {
		if q == p {
			return true
		}
	}
	return false
}
