package config

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/flowdhq/flowd/engine"
)

// DefaultDiscoveryTimeout bounds the discovery of one issuer.
const DefaultDiscoveryTimeout = 10 * time.Second

// maxDiscoveryBytes bounds a discovery document; real ones are a few KiB.
const maxDiscoveryBytes = 1 << 20

// Resolve fills AuthURL, TokenURL, RequireIssuer, DeviceAuthURL (when not
// set in the file and offered) and (when not set in the file) AuthMethod
// of every provider configured by issuer, from the issuer's
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

// Discover fills p's AuthURL, TokenURL and (when unset) AuthStyle from its
// issuer's discovery document, as Resolve does for every provider, so a
// provider whose issuer did not answer can be retried on its own. The
// error says where discovery failed and why.
func Discover(ctx context.Context, client *http.Client, timeout time.Duration, p *Provider) error {
	if client == nil {
		client = http.DefaultClient
	}
	if timeout <= 0 {
		timeout = DefaultDiscoveryTimeout
	}
	return discover(ctx, client, timeout, p)
}

type discoveryDoc struct {
	Issuer                string   `json:"issuer"`
	AuthorizationEndpoint string   `json:"authorization_endpoint"`
	TokenEndpoint         string   `json:"token_endpoint"`
	AuthMethods           []string `json:"token_endpoint_auth_methods_supported"`
	JWKSURI               string   `json:"jwks_uri"`
	// RevocationEndpoint is RFC 8414 section 2's revocation_endpoint.
	RevocationEndpoint string `json:"revocation_endpoint"`
	// RFC 9207 section 3: the server puts iss on every authorization response.
	IssParameterSupported bool `json:"authorization_response_iss_parameter_supported"`
	// RFC 8628 section 4: where the provider offers the device grant.
	DeviceAuthorizationEndpoint string `json:"device_authorization_endpoint"`
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
	// RFC 8414 section 3.3 and OpenID Connect Discovery 1.0 section 4.3:
	// the document's issuer must be identical to the one asked for, or the
	// endpoints may belong to someone else. It is also what iss must
	// equal, compared as exact strings (RFC 9207 section 2.4), so no
	// trailing slash is forgiven.
	if doc.Issuer != p.Issuer {
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
	p.RequireIssuer = doc.IssParameterSupported
	if p.DeviceAuthURL == "" && doc.DeviceAuthorizationEndpoint != "" {
		// A bad device endpoint costs only the device transport: leave it
		// out rather than refuse the provider.
		if _, err := checkURL(doc.DeviceAuthorizationEndpoint); err == nil {
			p.DeviceAuthURL = doc.DeviceAuthorizationEndpoint
		}
	}
	if p.AuthMethod == "" {
		// Chosen once, from the metadata (absent means
		// client_secret_basic, RFC 8414 section 2): never by trying one
		// and then another with a single-use code.
		m, err := engine.ChooseAuthMethod(doc.AuthMethods, p.ClientSecret != "")
		if err != nil {
			return fmt.Errorf("OIDC discovery at %s: %v; set client_secret, or token_endpoint_auth_method if the provider takes a method it does not advertise (Dex takes none from public clients)", where, err)
		}
		p.AuthMethod, p.AuthMethodFrom = string(m), FromDiscovery
	}
	return nil
}
