package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode"

	"github.com/flowdhq/flowd/states"
)

// Client is an OAuth client registered at a provider, passed with one
// connect (StartRequest.Client) instead of the client the provider is
// configured with: for an embedder whose users each bring their own OAuth
// app. It is used for that flow's authorization request and code
// exchange (or device authorization and polls), and for the refreshes and
// the revocation of the connection the flow makes, even after a restart.
//
// ID is recorded (it is public: it is in the authorization URL); Secret
// never is: it is sealed with the flow's other secrets in the Log, and
// then with the connection until it is disconnected or replaced.
type Client struct {
	// ID is the client_id registered at the provider. Required.
	ID string
	// Secret is the client secret; empty for a public client.
	Secret string
	// AuthMethod is how the client authenticates at the token endpoint,
	// as for Provider.AuthMethod: empty means AuthMethodNone without a
	// Secret and, with one, the provider's configured method when it sends
	// a secret (the token endpoint is the provider's), else
	// AuthMethodClientSecretBasic.
	AuthMethod AuthMethod
}

// RegisteredPerStart is the Registration the created record of a flow
// started with a StartRequest.Client carries, with the client's ID in
// ClientID and its auth method in TokenAuth.
const RegisteredPerStart = "per_start"

// Errors of per-start clients. Each is returned wrapped; test with errors.Is.
var (
	// ErrBadClient: StartRequest.Client is incomplete or inconsistent (no
	// ID, an unknown auth method, a secret with none or none with a
	// secret-based method), or was given for an MCP server. Nothing is
	// recorded.
	ErrBadClient = errors.New("invalid per-start client")
	// ErrClientMissing: a flow or connection made with a per-start client
	// finds that client's sealed copy missing (a Log whose secrets were
	// lost or restored apart from its records). The provider's configured
	// client is never used instead: a code or refresh token issued to one
	// client is refused from another, and the user chose this one. Only a
	// new connect helps.
	ErrClientMissing = errors.New("the per-start client is missing from the sealed store")
)

// Keys of per-start clients in the Log's secrets: a flow's own copy,
// sealed with its first records and dropped with its other secrets, and
// the connection's, written with its token (under its TokenKey) and
// deleted with it.
const (
	flowClientPrefix = "client/flow/"
	connClientPrefix = "client/conn/"
)

// maxClientID bounds a per-start client's ID: it is recorded and sent in
// every authorization URL.
const maxClientID = 512

// sealedClient is a per-start client as it is sealed; AuthMethod is
// resolved (never empty).
type sealedClient struct {
	ID         string     `json:"client_id"`
	Secret     string     `json:"client_secret,omitempty"`
	AuthMethod AuthMethod `json:"auth_method"`
}

// checkClient validates a per-start client for a Start naming provider
// and returns it as it is sealed. Its errors wrap ErrBadClient and never
// name the secret.
func checkClient(provider string, c *Client, resource string) (*sealedClient, error) {
	if c == nil {
		return nil, nil
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("start %s: %w: "+format, append([]any{provider, ErrBadClient}, args...)...)
	}
	switch {
	case resource != "":
		return nil, bad("an MCP server's client comes from its own registration (pre-registered in MCP.Clients, a client ID metadata document or dynamic registration); drop the client")
	case c.ID == "":
		return nil, bad("the client has no ID: pass the client_id registered at the provider, or no client to use the provider's configured one")
	case len(c.ID) > maxClientID:
		return nil, bad("the client ID is %d bytes, more than %d", len(c.ID), maxClientID)
	case strings.IndexFunc(c.ID, unicode.IsControl) >= 0:
		return nil, bad("the client ID contains control characters")
	}
	p := Provider{Name: provider, ClientID: c.ID, ClientSecret: c.Secret, AuthMethod: c.AuthMethod}
	m := authMethodOf(p)
	switch {
	case !m.Valid():
		return nil, bad("auth method %q is not %s, %s or %s", clip(string(m), 100), AuthMethodNone, AuthMethodClientSecretBasic, AuthMethodClientSecretPost)
	case m == AuthMethodNone && c.Secret != "":
		return nil, bad("auth method %s sends no client secret, but one is given: drop the secret, or use %s or %s", m, AuthMethodClientSecretBasic, AuthMethodClientSecretPost)
	case m != AuthMethodNone && c.Secret == "":
		return nil, bad("auth method %s needs a client secret, and none is given: pass one, or use %s for a public client", m, AuthMethodNone)
	}
	// An unset method is settled against the provider (forProvider).
	return &sealedClient{ID: c.ID, Secret: c.Secret, AuthMethod: c.AuthMethod}, nil
}

// forProvider is c with its auth method settled against the provider it
// is started at, when the caller gave none: none without a secret, the
// provider's own method when that sends a secret (the token endpoint is
// the provider's), else client_secret_basic. It is what gets sealed.
func (c *sealedClient) forProvider(p *provider) *sealedClient {
	if c == nil || c.AuthMethod != "" {
		return c
	}
	settled := *c
	settled.AuthMethod = authMethodOf(Provider{ClientSecret: c.Secret})
	if c.Secret != "" && (p.AuthMethod == AuthMethodClientSecretBasic || p.AuthMethod == AuthMethodClientSecretPost) {
		settled.AuthMethod = p.AuthMethod
	}
	return &settled
}

// withClient is p with c in place of its configured client; p itself
// when c is nil.
func (p *provider) withClient(c *sealedClient) *provider {
	if c == nil {
		return p
	}
	q := *p
	q.ClientID, q.ClientSecret, q.AuthMethod = c.ID, c.Secret, c.AuthMethod
	q.oauth = oauthConfig(q.Provider)
	q.client = c
	return &q
}

// createdClientData is what a flow's created record says of its per-start
// client: how it came, its id and its auth method, never its secret.
func createdClientData(d *states.Data, c *sealedClient) {
	if c == nil {
		return
	}
	if d.MCPDiscovery == nil {
		d.MCPDiscovery = &states.MCPDiscovery{}
	}
	d.Registration, d.ClientID, d.TokenAuth = RegisteredPerStart, c.ID, string(c.AuthMethod)
}

func encodeClient(c *sealedClient) []byte {
	b, _ := json.Marshal(c) // strings only: cannot fail
	return b
}

// readClient reads the sealed client under key; nil when there is none
// or it is unreadable (which the caller treats as missing).
func (e *Engine) readClient(ctx context.Context, key string) (*sealedClient, error) {
	b, ok, err := e.log.Secret(ctx, key)
	if err != nil || !ok {
		return nil, err
	}
	var c sealedClient
	if json.Unmarshal(b, &c) != nil || c.ID == "" || !c.AuthMethod.Valid() {
		return nil, nil
	}
	return &c, nil
}

func connClientKey(k TokenKey) string { return connClientPrefix + k.Provider + "/" + k.Account }

// connectionClient is the provider st's refreshes and revocation go to: p
// itself for a connection made with the provider's configured client, p
// with the connection's sealed per-start client otherwise, or an error
// wrapping ErrClientMissing when that client is gone or is another.
func (e *Engine) connectionClient(ctx context.Context, p *provider, key TokenKey, st StoredToken) (*provider, error) {
	if st.ClientID == "" {
		return p, nil
	}
	c, err := e.readClient(ctx, connClientKey(key))
	if err != nil {
		return nil, fmt.Errorf("token for %s: read its client: %w", key.Provider, err)
	}
	if c == nil || c.ID != st.ClientID {
		return nil, fmt.Errorf("token for %s: %w: it was connected with client %q, whose sealed copy is gone; connect again", key.Provider, ErrClientMissing, clip(st.ClientID, 100))
	}
	return p.withClient(c), nil
}
