package redirect_test

import (
	"context"
	"html/template"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowdhq/flowd/engine"
	"github.com/flowdhq/flowd/engine/redirect"
	"github.com/flowdhq/flowd/internal/oauthtest"
	"github.com/flowdhq/flowd/persist/memlog"
	"github.com/flowdhq/flowd/states"
)

type rig struct {
	t    *testing.T
	e    *engine.Engine
	prov *oauthtest.Server
	srv  *httptest.Server
	seen []redirect.Result
}

func newRig(t *testing.T, pages redirect.Pages) *rig {
	r := &rig{t: t, prov: oauthtest.New(t, oauthtest.Options{})}
	h := &redirect.Handler{Pages: pages, Observe: func(_ *http.Request, res redirect.Result) { r.seen = append(r.seen, res) }}
	r.srv = httptest.NewServer(h)
	t.Cleanup(r.srv.Close)
	e, err := engine.Open(context.Background(), engine.Config{
		Log: memlog.New(), LoopbackRedirectURL: r.srv.URL + engine.CallbackPath,
		Providers: []engine.Provider{{Name: "gh", AuthURL: r.prov.AuthURL, TokenURL: r.prov.TokenURL,
			AuthMethod: engine.AuthMethod(r.prov.AuthMethod), ClientID: r.prov.ClientID, ClientSecret: r.prov.ClientSecret}},
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = e.Close() })
	h.Engine = e
	r.e = e
	return r
}

// browser is a cookie-keeping client that does not follow redirects, so
// the test sees each hop.
func browser(t *testing.T) *http.Client {
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	return &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func get(t *testing.T, c *http.Client, u string) (*http.Response, string) {
	t.Helper()
	resp, err := c.Get(u)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func (r *rig) start() engine.Started {
	st, err := r.e.Start(context.Background(), engine.StartRequest{Provider: "gh", Launch: true})
	require.NoError(r.t, err)
	return st
}

func (r *rig) callbackURL(state, code string) string {
	return r.srv.URL + engine.CallbackPath + "?" + url.Values{"state": {state}, "code": {code}}.Encode()
}

// The launch page sets an HttpOnly, SameSite=Lax cookie on the callback's
// path and sends the browser on to the provider; the callback with that
// cookie completes, the same callback from a cookie-less client (another
// local user) is refused with a page that says so, and the flow waits on.
func TestLaunchThenCallbackWithCookie(t *testing.T) {
	r := newRig(t, nil)
	st := r.start()
	victim := browser(t)
	resp, _ := get(t, victim, st.LaunchURL)
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	assert.Equal(t, st.AuthURL, resp.Header.Get("Location"))
	cookies := resp.Cookies()
	require.Len(t, cookies, 1)
	c := cookies[0]
	assert.Equal(t, redirect.CookieName(st.ID), c.Name)
	assert.True(t, c.HttpOnly)
	assert.Equal(t, http.SameSiteLaxMode, c.SameSite)
	assert.Equal(t, engine.CallbackPath, c.Path)
	assert.NotContains(t, c.Name, st.ID)

	_, code := r.prov.Authorize(t, st.AuthURL)
	attacker := browser(t)
	resp, body := get(t, attacker, r.srv.URL+engine.CallbackPath+"?state="+url.QueryEscape(st.ID)+"&error=access_denied")
	assert.Equal(t, http.StatusForbidden, resp.StatusCode)
	assert.Contains(t, body, "only that browser may finish it")
	resp, _ = get(t, attacker, r.callbackURL(st.ID, code))
	assert.Equal(t, http.StatusForbidden, resp.StatusCode)
	f, err := r.e.Status(context.Background(), st.ID)
	require.NoError(t, err)
	assert.Equal(t, states.AwaitingCallback, f.State)
	assert.Zero(t, r.prov.Uses(code))

	resp, body = get(t, victim, r.callbackURL(st.ID, code))
	assert.Equal(t, http.StatusOK, resp.StatusCode, body)
	assert.Contains(t, body, "is connected")
	f, err = r.e.Status(context.Background(), st.ID)
	require.NoError(t, err)
	assert.Equal(t, states.Complete, f.State)
}

// A launch link opened twice binds the first browser only; HEAD and a
// prefetch never spend it.
func TestLaunchLinkOnceAndPrefetchSafe(t *testing.T) {
	r := newRig(t, nil)
	st := r.start()
	c := browser(t)
	for _, hdr := range []map[string]string{{"Sec-Purpose": "prefetch"}, {"Purpose": "prefetch"}} {
		req, _ := http.NewRequest(http.MethodGet, st.LaunchURL, nil)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := c.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, http.StatusNoContent, resp.StatusCode)
	}
	resp, err := c.Head(st.LaunchURL)
	require.NoError(t, err)
	resp.Body.Close()
	resp, _ = get(t, c, st.LaunchURL)
	assert.Equal(t, http.StatusSeeOther, resp.StatusCode, "the real visit still works")
	resp, body := get(t, browser(t), st.LaunchURL)
	assert.Equal(t, http.StatusConflict, resp.StatusCode)
	assert.Contains(t, body, "already opened")
	assert.Empty(t, resp.Cookies(), "a second opening gets no binding")
	resp, _ = get(t, browser(t), r.srv.URL+engine.LaunchPath+"?t=nonsense")
	assert.Equal(t, http.StatusNotFound, resp.StatusCode)
}

// A callback with neither code nor error (a prefetch, a mangled URL)
// changes nothing, on a bound flow and an unbound one.
func TestCallbackWithoutCodeOrErrorChangesNothing(t *testing.T) {
	r := newRig(t, nil)
	st := r.start()
	resp, body := get(t, browser(t), r.srv.URL+engine.CallbackPath+"?state="+url.QueryEscape(st.ID))
	assert.Equal(t, http.StatusBadRequest, resp.StatusCode)
	assert.Contains(t, body, "neither a code nor an error")
	f, err := r.e.Status(context.Background(), st.ID)
	require.NoError(t, err)
	assert.Equal(t, states.AwaitingCallback, f.State)
	assert.Equal(t, uint64(2), f.LastSeq, "nothing recorded")
}

// An embedder replaces the pages with its own template.
func TestTemplatePagesReplaceTheDefault(t *testing.T) {
	tpl := template.Must(template.New("x").Parse(`<p id="mine">{{.Kind}}|{{.Result.Flow.Provider}}</p>`))
	r := newRig(t, redirect.TemplatePages{Template: tpl})
	st := r.start()
	_, code := r.prov.Authorize(t, st.AuthURL)
	resp, body := get(t, browser(t), r.callbackURL(st.ID, code))
	assert.Equal(t, http.StatusOK, resp.StatusCode, "not launched: unbound, so a cookie-less callback works")
	assert.Equal(t, `<p id="mine">connected|gh</p>`, strings.TrimSpace(body))
	assert.Equal(t, "no-referrer", resp.Header.Get("Referrer-Policy"))
	require.NotEmpty(t, r.seen)
	assert.Equal(t, redirect.KindConnected, r.seen[len(r.seen)-1].Kind)
}
