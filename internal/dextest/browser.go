package dextest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
)

// Browser does the browser's part of an authorization: it follows Dex's
// redirects, logs in, approves (or rejects) and stops at the redirect URI
// without loading it, the way a user's browser would hand the redirect to
// flowd's callback.
type Browser struct {
	// Connector is the Dex connector to log in with: MockConnector
	// (default, no form) or LocalConnector (the password form).
	Connector string
	// Login and Password are typed into the password form. Default Email
	// and Password.
	Login, Password string
	// Reject presses "Cancel" on Dex's approval page, when the server shows
	// one (Options.ApprovalScreen).
	Reject bool
	// Secrets, when set, records the authorization codes the browser sees.
	Secrets *Secrets
	// Transport is the HTTP transport; default http.DefaultTransport.
	Transport http.RoundTripper
	// Jar keeps the browser's cookies across Authorize and Land, as a real
	// browser does: flowd's launch link sets the flow's binding cookie,
	// which the callback must carry. Default: a fresh jar on first use.
	Jar http.CookieJar
}

// jar returns the browser's cookie jar, making it on first use.
func (b *Browser) jar() http.CookieJar {
	if b.Jar == nil {
		b.Jar, _ = cookiejar.New(nil)
	}
	return b.Jar
}

// client is an HTTP client with the browser's cookies that stops at the
// first redirect that stop says to.
func (b *Browser) client(stop func(*url.URL) bool) *http.Client {
	return &http.Client{
		Jar:       b.jar(),
		Transport: b.Transport,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if stop(req.URL) {
				return http.ErrUseLastResponse
			}
			if len(via) >= 20 {
				return errors.New("stopped after 20 redirects")
			}
			return nil
		},
	}
}

// Launch opens a launch link (flowd's /oauth/launch?t=...) as a browser
// would: it keeps the binding cookie the link sets and returns where the
// link redirects, the provider's authorization URL.
func (b *Browser) Launch(ctx context.Context, launchURL string) (string, error) {
	resp, err := do(ctx, b.client(func(*url.URL) bool { return true }), http.MethodGet, launchURL, nil)
	if err != nil {
		return "", err
	}
	loc := resp.Header.Get("Location")
	if !isRedirect(resp.StatusCode) || loc == "" {
		return "", fmt.Errorf("browser: launch link answered %s, not a redirect: %s", resp.Status, resp.text)
	}
	u, err := resp.Request.URL.Parse(loc)
	if err != nil {
		return "", fmt.Errorf("browser: bad redirect %q: %w", loc, err)
	}
	return u.String(), nil
}

// Land loads the redirect Authorize returned, with the browser's cookies
// (the flow's binding cookie among them), and returns the page's status
// and text.
func (b *Browser) Land(ctx context.Context, final *url.URL) (int, string, error) {
	resp, err := do(ctx, b.client(func(*url.URL) bool { return true }), http.MethodGet, final.String(), nil)
	if err != nil {
		return 0, "", err
	}
	return resp.StatusCode, resp.text, nil
}

// Browser returns a browser for s that logs in with the mock connector and
// records the codes it sees in s.Secrets.
func (s *Server) Browser() *Browser {
	return &Browser{Connector: MockConnector, Secrets: s.Secrets}
}

// maxPages bounds the pages one authorization goes through (auth, login,
// approval, plus a retry), so a misbehaving server cannot loop the test.
const maxPages = 8

// Authorize opens authURL and does what the user would, until Dex
// redirects to the authorization request's redirect_uri. It returns that
// URL, carrying code and state, or error and error_description. It does
// not request the redirect URI itself (Land does). authURL may be a
// launch link: it is opened first (Launch), keeping its cookie.
//
// It fails when Dex shows an error page instead (the message says which),
// when the password is refused, and with ErrApprovalRejected after Reject.
func (b *Browser) Authorize(ctx context.Context, authURL string) (*url.URL, error) {
	u, err := url.Parse(authURL)
	if err != nil {
		return nil, fmt.Errorf("browser: parse authorization URL: %w", err)
	}
	if !u.Query().Has("redirect_uri") {
		next, err := b.Launch(ctx, authURL)
		if err != nil {
			return nil, err
		}
		if u, err = url.Parse(next); err != nil {
			return nil, fmt.Errorf("browser: parse authorization URL: %w", err)
		}
	}
	q := u.Query()
	redirect, err := url.Parse(q.Get("redirect_uri"))
	if err != nil || redirect.Host == "" {
		return nil, fmt.Errorf("browser: authorization URL has no usable redirect_uri (%q)", q.Get("redirect_uri"))
	}
	connector := b.Connector
	if connector == "" {
		connector = MockConnector
	}
	// Choosing the connector in the URL skips Dex's connector list, which
	// a user would click through.
	if q.Get("connector_id") == "" {
		q.Set("connector_id", connector)
		u.RawQuery = q.Encode()
	}

	client := b.client(func(next *url.URL) bool { return sameEndpoint(next, redirect) })

	resp, err := do(ctx, client, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	loggedIn := false
	for range maxPages {
		if loc := resp.Header.Get("Location"); isRedirect(resp.StatusCode) && loc != "" {
			final, err := resp.Request.URL.Parse(loc)
			if err != nil {
				return nil, fmt.Errorf("browser: bad redirect %q: %w", loc, err)
			}
			if b.Secrets != nil {
				b.Secrets.Add("code", final.Query().Get("code"))
			}
			return final, nil
		}
		page := resp.Request.URL
		if loggedIn && strings.HasSuffix(page.Path, "/login") {
			// Dex shows the form again (401) after a wrong password.
			return nil, fmt.Errorf("browser: dex refused the login for %q: %s", b.login(), resp.text)
		}
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("browser: dex answered %s at %s: %s", resp.Status, page.Path, resp.text)
		}
		switch {
		case strings.HasSuffix(page.Path, "/approval"):
			choice := "approve"
			if b.Reject {
				choice = "rejected"
			}
			form := url.Values{"req": {page.Query().Get("req")}, "approval": {choice}}
			resp, err = do(ctx, client, http.MethodPost, page.String(), form)
			if err != nil {
				return nil, err
			}
			if b.Reject && !isRedirect(resp.StatusCode) {
				return nil, fmt.Errorf("%w (dex answered %s: %s)", ErrApprovalRejected, resp.Status, resp.text)
			}
		case strings.HasSuffix(page.Path, "/login"):
			loggedIn = true
			pw := b.Password
			if pw == "" {
				pw = Password
			}
			form := url.Values{"login": {b.login()}, "password": {pw}}
			resp, err = do(ctx, client, http.MethodPost, page.String(), form)
			if err != nil {
				return nil, err
			}
		default:
			return nil, fmt.Errorf("browser: unexpected page %s: %s", page.Path, resp.text)
		}
	}
	return nil, fmt.Errorf("browser: no redirect to %s after %d pages", redirect, maxPages)
}

func (b *Browser) login() string {
	if b.Login != "" {
		return b.Login
	}
	return Email
}

// page is a response whose body has been read and reduced to its text.
type page struct {
	*http.Response
	text string
}

func do(ctx context.Context, c *http.Client, method, u string, form url.Values) (*page, error) {
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, fmt.Errorf("browser: %w", err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("browser: %s %s: %w", method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return &page{Response: resp, text: pageText(raw)}, nil
}

func isRedirect(status int) bool { return status >= 300 && status < 400 }

func sameEndpoint(a, b *url.URL) bool {
	return a.Scheme == b.Scheme && a.Host == b.Host && a.Path == b.Path
}

var (
	scriptRe = regexp.MustCompile(`(?is)<(script|style)[^>]*>.*?</(script|style)>`)
	tagRe    = regexp.MustCompile(`<[^>]*>`)
)

// pageText reduces an HTML page to its visible words, enough to say in an
// error what Dex showed ("Approval rejected.", "Unregistered redirect_uri").
func pageText(html []byte) string {
	s := scriptRe.ReplaceAllString(string(html), " ")
	s = tagRe.ReplaceAllString(s, " ")
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 400 {
		s = s[:400] + "..."
	}
	return s
}

// ApproveDevice does the user's part of a device flow (RFC 8628 section
// 3.3) at Dex: it opens the verification URI, enters userCode in Dex's
// form (a POST to /device/auth/verify_code), logs in with the browser's
// connector, and checks Dex's success page. flowd, polling the token
// endpoint, then gets the token. It fails with Dex's own words when Dex
// refuses the code (unknown or expired) or the login.
func (b *Browser) ApproveDevice(ctx context.Context, verificationURI, userCode string) error {
	page0, err := url.Parse(verificationURI)
	if err != nil {
		return fmt.Errorf("browser: parse verification URI: %w", err)
	}
	jar, _ := cookiejar.New(nil)
	noFollow := &http.Client{Jar: jar, Transport: b.Transport,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := do(ctx, noFollow, http.MethodGet, page0.String(), nil)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("browser: dex answered %s at %s: %s", resp.Status, page0.Path, resp.text)
	}
	// The form on that page posts the code to /device/auth/verify_code.
	verify := *page0
	verify.Path = strings.TrimSuffix(page0.Path, "/device") + "/device/auth/verify_code"
	verify.RawQuery = ""
	resp, err = do(ctx, noFollow, http.MethodPost, verify.String(), url.Values{"user_code": {userCode}})
	if err != nil {
		return err
	}
	loc := resp.Header.Get("Location")
	if !isRedirect(resp.StatusCode) || loc == "" {
		return fmt.Errorf("browser: dex did not take user code %q (%s): %s", userCode, resp.Status, resp.text)
	}
	auth, err := resp.Request.URL.Parse(loc)
	if err != nil {
		return fmt.Errorf("browser: bad redirect %q: %w", loc, err)
	}
	connector := b.Connector
	if connector == "" {
		connector = MockConnector
	}
	q := auth.Query()
	q.Set("connector_id", connector)
	auth.RawQuery = q.Encode()
	follow := &http.Client{Jar: jar, Transport: b.Transport}
	resp, err = do(ctx, follow, http.MethodGet, auth.String(), nil)
	if err != nil {
		return err
	}
	for range maxPages {
		page := resp.Request.URL
		switch {
		case resp.StatusCode == http.StatusOK && strings.HasSuffix(page.Path, DeviceCallbackPath):
			return nil // Dex's "Login Successful" page: the device token is complete
		case resp.StatusCode == http.StatusOK && strings.HasSuffix(page.Path, "/login"):
			pw := b.Password
			if pw == "" {
				pw = Password
			}
			resp, err = do(ctx, follow, http.MethodPost, page.String(), url.Values{"login": {b.login()}, "password": {pw}})
			if err != nil {
				return err
			}
		case resp.StatusCode == http.StatusOK && strings.HasSuffix(page.Path, "/approval"):
			resp, err = do(ctx, follow, http.MethodPost, page.String(), url.Values{"req": {page.Query().Get("req")}, "approval": {"approve"}})
			if err != nil {
				return err
			}
		default:
			return fmt.Errorf("browser: device login ended at %s with %s: %s", page.Path, resp.Status, resp.text)
		}
	}
	return fmt.Errorf("browser: device login did not finish after %d pages", maxPages)
}
