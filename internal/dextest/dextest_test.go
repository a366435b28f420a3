package dextest

import (
	"context"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/oauth2"
)

func config(s *Server, clientID, secret string, scopes ...string) *oauth2.Config {
	return &oauth2.Config{
		ClientID:     clientID,
		ClientSecret: secret,
		Endpoint:     oauth2.Endpoint{AuthURL: s.AuthURL, TokenURL: s.TokenURL, AuthStyle: oauth2.AuthStyleInHeader},
		RedirectURL:  s.RedirectURIs[0],
		Scopes:       scopes,
	}
}

// authorize runs the browser part for a fresh PKCE authorization and
// returns the redirect it ended on and the verifier.
func authorize(t *testing.T, s *Server, b *Browser, cfg *oauth2.Config) (*url.URL, string) {
	t.Helper()
	verifier := oauth2.GenerateVerifier()
	authURL := cfg.AuthCodeURL("state-123", oauth2.S256ChallengeOption(verifier))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	final, err := b.Authorize(ctx, authURL)
	require.NoError(t, err)
	assert.Equal(t, "state-123", final.Query().Get("state"), "dex must hand the state back")
	return final, verifier
}

func TestDexLoginExchangeUserinfoAndRotation(t *testing.T) {
	s := Start(t, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := config(s, ClientID, ClientSecret, "openid", "email", "offline_access")

	for _, conn := range []string{MockConnector, LocalConnector} {
		t.Run(conn, func(t *testing.T) {
			b := s.Browser()
			b.Connector = conn
			final, verifier := authorize(t, s, b, cfg)
			code := final.Query().Get("code")
			require.NotEmpty(t, code, "redirect %s has no code", final.Redacted())
			assert.Equal(t, s.RedirectURIs[0], final.Scheme+"://"+final.Host+final.Path)

			tok, err := cfg.Exchange(ctx, code, oauth2.VerifierOption(verifier))
			require.NoError(t, err)
			require.NotEmpty(t, tok.RefreshToken, "offline_access must give a refresh token")

			claims, err := s.Userinfo(ctx, tok.AccessToken)
			require.NoError(t, err)
			if conn == LocalConnector {
				assert.Equal(t, Email, claims["email"])
			}

			// A code is good once.
			_, err = cfg.Exchange(ctx, code, oauth2.VerifierOption(verifier))
			require.Error(t, err)

			// Refresh tokens rotate, and an old one is refused at once.
			next, err := s.Refresh(ctx, tok.RefreshToken)
			require.NoError(t, err)
			assert.NotEqual(t, tok.RefreshToken, next["refresh_token"])
			_, err = s.Refresh(ctx, tok.RefreshToken)
			var te *TokenError
			require.ErrorAs(t, err, &te)
			_, err = s.Refresh(ctx, next["refresh_token"].(string))
			require.NoError(t, err)

			// The proxy saw the code, the verifier and the tokens.
			kinds := s.Secrets.Kinds()
			for _, k := range []string{"code", "code_verifier", "client_secret", "access_token", "refresh_token"} {
				assert.Positive(t, kinds[k], "secrets of kind %s recorded", k)
			}
			assert.NotEmpty(t, s.Secrets.Leaks([]byte("x"+code+"y")))
		})
	}
	// Each connector's code went to the token endpoint twice (the second
	// time refused); the proxy counted both, and no refresh as a code.
	distinct, twice := s.CodesPresented()
	assert.Equal(t, 2, distinct, "codes presented")
	assert.Equal(t, 2, twice, "codes presented more than once")
}

func TestDexPublicClient(t *testing.T) {
	s := Start(t, Options{})
	cfg := config(s, PublicClientID, "", "openid")
	cfg.Endpoint.AuthStyle = oauth2.AuthStyleInParams
	final, verifier := authorize(t, s, s.Browser(), cfg)
	tok, err := cfg.Exchange(context.Background(), final.Query().Get("code"), oauth2.VerifierOption(verifier))
	require.NoError(t, err)
	_, err = s.Userinfo(context.Background(), tok.AccessToken)
	require.NoError(t, err)
}

// The device grant at Dex (RFC 8628), with x/oauth2's own client: Dex's
// device endpoint comes from discovery, ApproveDevice plays the user at
// /device, and a user code Dex did not issue is refused with Dex's words.
func TestDexDeviceFlow(t *testing.T) {
	s := Start(t, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := config(s, PublicClientID, "", "openid")
	cfg.Endpoint.AuthStyle = oauth2.AuthStyleInParams
	cfg.Endpoint.DeviceAuthURL = s.DeviceAuthURL
	da, err := cfg.DeviceAuth(ctx)
	require.NoError(t, err)
	assert.Equal(t, s.Issuer+"/device", da.VerificationURI)
	err = s.Browser().ApproveDevice(ctx, da.VerificationURI, "NOPE-NOPE")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "did not take user code")
	require.NoError(t, s.Browser().ApproveDevice(ctx, da.VerificationURI, da.UserCode))
	tok, err := cfg.DeviceAccessToken(ctx, da)
	require.NoError(t, err)
	_, err = s.Userinfo(ctx, tok.AccessToken)
	require.NoError(t, err)
}

func TestDexDenials(t *testing.T) {
	t.Run("scope refused by policy redirects with an error", func(t *testing.T) {
		s := Start(t, Options{})
		cfg := config(s, ClientID, ClientSecret, "openid", DeniedScope)
		final, _ := authorize(t, s, s.Browser(), cfg)
		assert.Equal(t, "invalid_scope", final.Query().Get("error"))
		assert.NotEmpty(t, final.Query().Get("error_description"))
		assert.Empty(t, final.Query().Get("code"))
	})
	t.Run("approval screen", func(t *testing.T) {
		s := Start(t, Options{ApprovalScreen: true})
		cfg := config(s, ClientID, ClientSecret, "openid")
		final, _ := authorize(t, s, s.Browser(), cfg)
		assert.NotEmpty(t, final.Query().Get("code"), "approving gives a code")

		b := s.Browser()
		b.Reject = true
		_, err := b.Authorize(context.Background(), cfg.AuthCodeURL("s", oauth2.S256ChallengeOption(oauth2.GenerateVerifier())))
		require.ErrorIs(t, err, ErrApprovalRejected)
	})
	t.Run("wrong password", func(t *testing.T) {
		s := Start(t, Options{})
		b := s.Browser()
		b.Connector, b.Password = LocalConnector, "not-the-password"
		_, err := b.Authorize(context.Background(), config(s, ClientID, ClientSecret, "openid").AuthCodeURL("s"))
		require.ErrorContains(t, err, "refused the login")
	})
}

func TestDexSQLiteStorage(t *testing.T) {
	s := Start(t, Options{Storage: "sqlite3"})
	final, _ := authorize(t, s, s.Browser(), config(s, ClientID, ClientSecret, "openid"))
	assert.NotEmpty(t, final.Query().Get("code"))
}

// fakeTB records whether Binary skipped or failed.
type fakeTB struct {
	testing.TB
	mu              sync.Mutex
	skipped, failed string
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Skip(args ...any) {
	f.mu.Lock()
	f.skipped = args[0].(string)
	f.mu.Unlock()
	runtime.Goexit()
}

func (f *fakeTB) Fatalf(format string, args ...any) {
	f.mu.Lock()
	f.failed = format
	f.mu.Unlock()
	runtime.Goexit()
}

func runBinary(tb *fakeTB) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		Binary(tb)
	}()
	<-done
}

func TestMissingBinarySkipsLocallyAndFailsInCI(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "no-dex")
	t.Setenv("FLOWD_DEX_BIN", missing)

	t.Setenv("CI", "")
	local := &fakeTB{}
	runBinary(local)
	assert.Empty(t, local.failed)
	assert.Contains(t, local.skipped, missing, "the skip names where dex was looked for")
	assert.Contains(t, local.skipped, "tools/dex/build.sh", "the skip says how to build dex")

	t.Setenv("CI", "true")
	ci := &fakeTB{}
	runBinary(ci)
	assert.Empty(t, ci.skipped, "CI must not skip")
	assert.Contains(t, ci.failed, "CI=true")
}

func TestSecretsLeaks(t *testing.T) {
	s := NewSecrets()
	s.Add("code", "short")
	s.Add("access_token", "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlLXBhcnQtb2YtdGhlLWp3dA")
	s.Add("refresh_token", "a/b+c=d-refresh")
	assert.Empty(t, s.Leaks([]byte("short and eyJhbGciOiJSUzI1NiJ9 headers are fine")))
	assert.Equal(t, []string{"access_token (signature) at byte 4"}, s.Leaks([]byte("sig=c2lnbmF0dXJlLXBhcnQtb2YtdGhlLWp3dA")))
	assert.Len(t, s.Leaks([]byte(`{"t":"a\/b+c=d-refresh"}`)), 1, "JSON-escaped form is found")
	assert.Len(t, s.Leaks([]byte(`t=`+url.QueryEscape("a/b+c=d-refresh"))), 1, "URL-encoded form is found")
	vals := s.Values()
	assert.Equal(t, "refresh_token", vals["a/b+c=d-refresh"])
	assert.Equal(t, "access_token (signature)", vals["c2lnbmF0dXJlLXBhcnQtb2YtdGhlLWp3dA"])
	assert.NotContains(t, vals, "short", "values too short to be secrets are not kept")
}

// A fresh clone has go.mod files newer than any cached binary: build.sh
// must reuse a binary of the pinned version all the same (three minutes
// saved), and rebuild one that is not.
func TestBuildScriptReusesTheBinaryOfThePinnedVersion(t *testing.T) {
	cached := BinaryPath()
	if _, err := os.Stat(cached); err != nil {
		t.Skipf("no dex binary at %s to check the cache rule with; build it with %s", cached, BuildCommand())
	}
	realGo, err := exec.LookPath("go")
	require.NoError(t, err)
	src := filepath.Dir(BuildCommand())
	dir := t.TempDir()
	clone := filepath.Join(dir, "tools", "dex")
	require.NoError(t, os.MkdirAll(clone, 0o755))
	future := time.Now().Add(time.Hour) // as a checkout just made
	for _, name := range []string{"build.sh", "go.mod", "go.sum"} {
		b, err := os.ReadFile(filepath.Join(src, name))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(clone, name), b, 0o755))
		require.NoError(t, os.Chtimes(filepath.Join(clone, name), future, future))
	}
	// A go that refuses to build: reaching `go build` means a rebuild.
	stubDir := filepath.Join(dir, "bin")
	require.NoError(t, os.MkdirAll(stubDir, 0o755))
	stub := "#!/bin/sh\nif [ \"$1\" = build ]; then echo WOULD-REBUILD >&2; exit 3; fi\nexec " + realGo + " \"$@\"\n"
	require.NoError(t, os.WriteFile(filepath.Join(stubDir, "go"), []byte(stub), 0o755))
	run := func(bin string) (string, string, error) {
		cmd := exec.Command("sh", filepath.Join(clone, "build.sh"))
		cmd.Env = append(os.Environ(), "FLOWD_DEX_BIN="+bin, "PATH="+stubDir+string(os.PathListSeparator)+os.Getenv("PATH"))
		var out, errb strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		return strings.TrimSpace(out.String()), errb.String(), err
	}

	out, stderr, err := run(cached)
	require.NoError(t, err, "build.sh rebuilt a binary of the pinned version: %s", stderr)
	assert.Equal(t, cached, out)

	other := filepath.Join(dir, "not-dex")
	require.NoError(t, os.WriteFile(other, []byte("#!/bin/sh\n"), 0o755))
	_, stderr, err = run(other)
	assert.Error(t, err)
	assert.Contains(t, stderr, "WOULD-REBUILD", "a binary that is not the pinned dex is rebuilt")
}
