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

// A user who brings their own OAuth app: StartRequest.Client replaces the
// provider's configured client for this flow and for the connection it
// makes (its refreshes and its revocation). The secret is sealed with
// the flow, never recorded; the record names only the client id.
func ExampleEngine_Start_ownClient() {
	ctx := context.Background()
	provider := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The token request authenticates as the user's app.
		if r.FormValue("client_id") != "users-app" || r.FormValue("client_secret") != "users-app-secret" {
			http.Error(w, `{"error":"invalid_client"}`, http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"access_token":"gho_y","token_type":"bearer","scope":"repo"}`)
	}))
	defer provider.Close()

	e, err := engine.Open(ctx, engine.Config{
		Log: memlog.New(),
		Providers: []engine.Provider{{
			Name: "github", ClientID: "flowd-app", ClientSecret: "flowd-app-secret",
			AuthURL: "https://github.com/login/oauth/authorize", TokenURL: provider.URL,
			AuthMethod: engine.AuthMethodClientSecretPost, Scopes: []string{"repo"},
		}},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer e.Close()

	st, err := e.Start(ctx, engine.StartRequest{Provider: "github",
		Client: &engine.Client{ID: "users-app", Secret: "users-app-secret"}})
	if err != nil {
		log.Fatal(err)
	}
	f, err := e.Callback(ctx, engine.CallbackParams{State: st.ID, Code: "code-from-the-redirect"})
	if err != nil {
		log.Fatal(err)
	}
	h, err := e.History(ctx, st.ID)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(f.State, h[0].Data.MCP().Registration, h[0].Data.MCP().ClientID)
	// Output: complete per_start users-app
}
