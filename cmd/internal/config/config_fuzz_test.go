package config

import (
	"errors"
	"github.com/flowdhq/flowd/engine"
	"net"
	"strings"
	"testing"
)

// fuzzSecret is the client secret the seeds carry; no error may show it.
const fuzzSecret = "cs-FUZZ-d0ntl34k-7e2a"

// FuzzParse feeds Parse any file contents. It must never panic; every
// refusal is a *Error naming the file (and a field, unless the file does
// not parse); no error shows the client secret; and what it accepts keeps
// the promises flowd relies on: a loopback listener, a TTL in range, and
// providers with a valid name, a client id, absolute endpoints (or an
// issuer) and an explicit auth style.
func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		"",
		"listen = \"127.0.0.1:8085\"\nttl = \"5m\"\nretention = \"-1h\"\n",
		"[providers.github]\nclient_id = \"id\"\nclient_secret = \"" + fuzzSecret + "\"\n",
		"[providers.dex]\nissuer = \"http://127.0.0.1:5556/dex\"\nclient_id = \"flowd\"\nclient_secret_env = \"DEX\"\nscopes = [\"openid\"]\nauth_params = { prompt = \"login\" }\n",
		"[providers.x]\nauth_url = \"https://a.example/auth\"\ntoken_url = \"https://a.example/token\"\nclient_id = \"c\"\nclient_secret = \"" + fuzzSecret + "\"\nauth_style = \"in_params\"\n",
		"[providers.work]\npreset = \"microsoft\"\ntenant = \"contoso.onmicrosoft.com\"\nclient_id = \"c\"\n",
		"listen = \"0.0.0.0:8085\"\n",
		"listen = \"[::1]:0\"\npublic_base_url = \"https://gw.example/base/?q#f\"\n",
		"ttl = \"25h\"\n",
		"ttl = 5\n",
		"[providers.Bad_Name]\nclient_id = \"c\"\n",
		"[providers.x]\nauth_url = \"ftp://a\"\ntoken_url = \"javascript:alert(1)\"\nclient_id = \"c\"\nclient_secret = \"" + fuzzSecret + "\"\n",
		"[providers.x]\nissuer = \"https://i.example\"\nauth_url = \"https://a\"\nclient_id = \"c\"\n",
		"[providers.github]\nclient_id = \"c\"\nscopes = [\"a b\", \"\"]\n",
		"[providers.github]\nclient_id = \"c\"\nauth_stlye = \"in_header\"\n",
		"[[providers]]\nname = 1\n",
		"listen = \"127.0.0.1:8085\"\nlisten = \"127.0.0.1:8086\"\n",
		"\x00\xff\"unterminated",
		"[providers.github]\nclient_id = \"c\"\nclient_secret = \"" + fuzzSecret + "\"\nclient_secret = \"again\"\n",
	} {
		f.Add(seed)
	}
	getenv := func(k string) string {
		if k == "DEX" {
			return fuzzSecret
		}
		return ""
	}
	f.Fuzz(func(t *testing.T, data string) {
		c, err := Parse("fuzz.toml", []byte(data), getenv)
		if err != nil {
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("error is not a *config.Error: %T %v", err, err)
			}
			if ce.File != "fuzz.toml" || !strings.HasPrefix(err.Error(), "config fuzz.toml") {
				t.Fatalf("error does not name the file: %v", err)
			}
			if ce.Reason == "" {
				t.Fatalf("error gives no reason: %v", err)
			}
			if strings.Contains(err.Error(), fuzzSecret) {
				t.Fatalf("error shows the client secret: %v", err)
			}
			return
		}
		host, _, err := net.SplitHostPort(c.Listen)
		if err != nil {
			t.Fatalf("accepted listen %q", c.Listen)
		}
		if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			t.Fatalf("accepted a non-loopback listen %q", c.Listen)
		}
		if c.TTL < 1e9 || c.TTL > MaxTTL {
			t.Fatalf("accepted ttl %v", c.TTL)
		}
		if c.Retention == 0 {
			t.Fatal("accepted retention 0")
		}
		for _, p := range c.Providers {
			if !nameRE.MatchString(p.Name) || p.ClientID == "" {
				t.Fatalf("accepted provider %q with client id %q", p.Name, p.ClientID)
			}
			if p.Issuer == "" {
				for _, u := range []string{p.AuthURL, p.TokenURL} {
					if !strings.HasPrefix(u, "https://") && !strings.HasPrefix(u, "http://") {
						t.Fatalf("provider %s: accepted endpoint %q", p.Name, u)
					}
				}
				if m := engine.AuthMethod(p.AuthMethod); !m.Valid() || fitsCredentials(m, p.ClientSecret != "") != nil {
					t.Fatalf("provider %s: accepted auth method %q with secret=%v", p.Name, p.AuthMethod, p.ClientSecret != "")
				}
			}
			for _, s := range p.Scopes {
				if s == "" || strings.ContainsAny(s, " \t\r\n") {
					t.Fatalf("provider %s: accepted scope %q", p.Name, s)
				}
			}
			if strings.Contains(p.String(), fuzzSecret) {
				t.Fatalf("provider %s prints its secret", p.Name)
			}
		}
	})
}
