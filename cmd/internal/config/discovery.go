package config

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"
)

// DefaultDiscoveryTimeout bounds the discovery of one issuer.
const DefaultDiscoveryTimeout = 10 * time.Second

// maxDiscoveryBytes bounds a discovery document; real ones are a few KiB.
const maxDiscoveryBytes = 1 << 20

// Resolve fills AuthURL, TokenURL and (when unset) AuthStyle of every
// provider configured by issuer, from the issuer's
// .well-known/openid-configuration. Each fetch is bounded by timeout (0
// means DefaultDiscoveryTimeout). client nil means http.DefaultClient.
func (c *Config) Resolve(ctx context.Context, client *http.Client, timeout time.Duration) error {
	if client == nil {
		client = http.DefaultClient
	}
	if timeout <= 0 {
		timeout = DefaultDiscoveryTimeout
	}
	for i := range c.Providers {
		p := &c.Providers[i]
		if p.Issuer == "" {
			continue
		}
		if err := discover(ctx, client, timeout, p); err != nil {
			return &Error{File: c.File, Field: "providers." + p.Name + ".issuer", Reason: err.Error()}
		}
	}
	return nil
}

type discoveryDoc struct {
	Issuer                string   `json:"issuer"`
	AuthorizationEndpoint string   `json:"authorization_endpoint"`
	TokenEndpoint         string   `json:"token_endpoint"`
	AuthMethods           []string `json:"token_endpoint_auth_methods_supported"`
	JWKSURI               string   `json:"jwks_uri"`
	// RevocationEndpoint is RFC 8414 section 2's revocation_endpoint.
	RevocationEndpoint string `json:"revocation_endpoint"`
}

func discover(ctx context.Context, client *http.Client, timeout time.Duration, p *Provider) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	where := strings.TrimRight(p.Issuer, "/") + "/.well-known/openid-configuration"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, where, nil)
	if err != nil {
		return fmt.Errorf("OIDC discovery at %s: %v", where, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("OIDC discovery at %s: no answer within %v; check the issuer URL and that the server is up", where, timeout)
		}
		return fmt.Errorf("OIDC discovery at %s: %v; check the issuer URL and that the server is up", where, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("OIDC discovery at %s: HTTP %d; check the issuer URL", where, resp.StatusCode)
	}
	var doc discoveryDoc
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxDiscoveryBytes)).Decode(&doc); err != nil {
		return fmt.Errorf("OIDC discovery at %s: not a discovery document: %v", where, err)
	}
	// OpenID Connect Discovery 1.0 section 4.3: the document's issuer must
	// be the one asked for, or the endpoints may belong to someone else.
	if strings.TrimRight(doc.Issuer, "/") != strings.TrimRight(p.Issuer, "/") {
		return fmt.Errorf("OIDC discovery at %s: the document names issuer %q, not %q; set issuer to exactly the provider's issuer", where, doc.Issuer, p.Issuer)
	}
	if _, err := checkURL(doc.AuthorizationEndpoint); err != nil {
		return fmt.Errorf("OIDC discovery at %s: authorization_endpoint: %v", where, err)
	}
	if _, err := checkURL(doc.TokenEndpoint); err != nil {
		return fmt.Errorf("OIDC discovery at %s: token_endpoint: %v", where, err)
	}
	p.AuthURL, p.TokenURL = doc.AuthorizationEndpoint, doc.TokenEndpoint
	if doc.JWKSURI != "" {
		// OpenID Connect Discovery 1.0 section 3: jwks_uri is required;
		// without one, ID tokens cannot be verified and are not trusted.
		if _, err := checkURL(doc.JWKSURI); err != nil {
			return fmt.Errorf("OIDC discovery at %s: jwks_uri: %v", where, err)
		}
		p.IDTokenIssuer, p.JWKSURL = doc.Issuer, doc.JWKSURI
	}
	if p.RevocationURL == "" && doc.RevocationEndpoint != "" {
		if _, err := checkURL(doc.RevocationEndpoint); err != nil {
			return fmt.Errorf("OIDC discovery at %s: revocation_endpoint: %v", where, err)
		}
		p.RevocationURL = doc.RevocationEndpoint
	}
	if p.AuthStyle == "" {
		// The spec's default when the field is absent is client_secret_basic.
		p.AuthStyle = AuthStyleInHeader
		if len(doc.AuthMethods) > 0 && !slices.Contains(doc.AuthMethods, "client_secret_basic") &&
			slices.Contains(doc.AuthMethods, "client_secret_post") {
			p.AuthStyle = AuthStyleInParams
		}
	}
	return nil
}
