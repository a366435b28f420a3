package engine_test

import (
	"context"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"

	"github.com/flowdhq/flowd/engine"
	"github.com/flowdhq/flowd/persist/memlog"
)

// Embedding the engine: open it on a log, start a flow, deliver the
// provider's redirect to Callback, and Wait for the outcome.
func Example() {
	ctx := context.Background()
	// A stand-in for the provider's token endpoint.
	provider := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"access_token":"gho_x","token_type":"bearer","scope":"repo"}`)
	}))
	defer provider.Close()

	e, err := engine.Open(ctx, engine.Config{
		Log: memlog.New(), // durable: persist.Open("flowd.db", persist.Options{})
		Providers: []engine.Provider{{
			Name: "github", ClientID: "my-client-id", ClientSecret: "my-client-secret",
			AuthURL: "https://github.com/login/oauth/authorize", TokenURL: provider.URL,
			AuthMethod: engine.AuthMethodClientSecretPost, Scopes: []string{"repo"},
		}},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer e.Close()

	st, err := e.Start(ctx, engine.StartRequest{Provider: "github"})
	if err != nil {
		log.Fatal(err)
	}
	// Send the user to st.AuthURL. The provider redirects to st.RedirectURI,
	// where your HTTP handler passes the query on:
	go e.Callback(ctx, engine.CallbackParams{State: st.ID, Code: "code-from-the-redirect"})

	f, err := e.Wait(ctx, st.ID)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(f.State, f.GrantedScopes)
	// Output: complete [repo]
}
