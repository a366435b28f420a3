package redirect_test

import (
	"context"
	"fmt"
	"net"
	"net/http"

	"github.com/flowdhq/flowd/engine"
	"github.com/flowdhq/flowd/engine/redirect"
)

// An embedder's loopback listener: the handler serves the launch link and
// the callback, and the user's browser is sent to the launch link, so the
// flow is bound to that browser.
func Example() {
	var e *engine.Engine // engine.Open(ctx, engine.Config{..., LoopbackRedirectURL: "http://127.0.0.1:8085/oauth/callback"})
	if e == nil {
		return
	}
	l, err := net.Listen("tcp", "127.0.0.1:8085")
	if err != nil {
		return
	}
	mux := http.NewServeMux()
	h := &redirect.Handler{Engine: e}
	mux.Handle(engine.CallbackPath, h)
	mux.Handle(engine.LaunchPath, h)
	go func() { _ = http.Serve(l, mux) }()

	st, err := e.Start(context.Background(), engine.StartRequest{Provider: "github", Launch: true})
	if err != nil {
		return
	}
	fmt.Println("open in the browser:", st.LaunchURL) // not st.AuthURL
}
