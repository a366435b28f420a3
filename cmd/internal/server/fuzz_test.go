package server

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/flowdhq/flowd/engine"
	"github.com/flowdhq/flowd/persist/memlog"
)

// fuzzServer is a server on a memlog engine whose provider's token
// endpoint is unreachable (port 1): fuzzed input must never get that far
// with a real flow, and when it does the exchange fails fast.
func fuzzServer(f *testing.F) *Server {
	eng, err := engine.Open(context.Background(), engine.Config{Log: memlog.New(), Providers: []engine.Provider{{
		Name: "fake", AuthURL: "https://example.test/auth", TokenURL: "http://127.0.0.1:1/token",
		AuthMethod: engine.AuthMethodNone, ClientID: "cid",
	}}})
	require.NoError(f, err)
	f.Cleanup(func() { _ = eng.Close() })
	s, err := New(Config{Engine: eng, ServiceToken: serviceTok})
	require.NoError(f, err)
	return s
}

func serveAs(s *Server, ci connInfo, r *http.Request) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	s.Handler().ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), connKey, ci)))
	return w
}

// FuzzBrowserCallback: any query on GET /oauth/callback is answered with a
// page and a 4xx or 2xx, never a panic or a 5xx.
func FuzzBrowserCallback(f *testing.F) {
	s := fuzzServer(f)
	for _, seed := range []string{"state=abc&code=x", "", "state=", "code=only", "state=a&error=access_denied&error_description=%3Cb%3E",
		"state=%zz", "state=a&state=b", ";;;&&&==="} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, q string) {
		r := httptest.NewRequest("GET", "/oauth/callback", nil)
		r.URL.RawQuery = q
		w := serveAs(s, connInfo{}, r)
		if w.Code >= 500 {
			t.Fatalf("query %q: status %d", q, w.Code)
		}
	})
}

// FuzzAPIDecoders: any body to the JSON routes is a clear 4xx or a
// success, never a panic or a 5xx.
func FuzzAPIDecoders(f *testing.F) {
	s := fuzzServer(f)
	for _, seed := range []string{`{"provider":"fake"}`, `{"provider":"nope"}`, `{}`, `[]`, `null`, `{"ttl":"-1s","provider":"fake"}`,
		`{"url":"http://x/?state=a&code=b"}`, `{"state":"a","code":"b"}`, `{"provider":"fake"}{"provider":"fake"}`, "\x00"} {
		f.Add(seed, true)
		f.Add(seed, false)
	}
	local := connInfo{unix: true, uid: os.Getuid()}
	f.Fuzz(func(t *testing.T, body string, start bool) {
		path := "/v1/callbacks"
		if start {
			path = "/v1/flows"
		}
		r := httptest.NewRequest("POST", path, bytes.NewReader([]byte(body)))
		w := serveAs(s, local, r)
		if w.Code >= 500 {
			t.Fatalf("%s %q: status %d: %s", path, body, w.Code, w.Body)
		}
	})
}
