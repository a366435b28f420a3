package main

import (
	"context"
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/oauth2"
)

// The in-process token endpoint answers at once, but only an exchange that
// sends a code and a PKCE verifier: the engine cannot pass by sending less.
func TestTokenEndpoint(t *testing.T) {
	cfg := engineConfig(nil, nil).Providers[0]
	oc := oauth2.Config{ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret,
		Endpoint: oauth2.Endpoint{TokenURL: cfg.TokenURL, AuthStyle: oauth2.AuthStyleInParams}}
	ctx := context.WithValue(context.Background(), oauth2.HTTPClient, &http.Client{Transport: tokenEndpoint{}})

	tok, err := oc.Exchange(ctx, "a-code", oauth2.VerifierOption("a-verifier"))
	require.NoError(t, err)
	assert.Equal(t, "bench-access-token", tok.AccessToken)
	assert.Equal(t, "bench-refresh", tok.RefreshToken)

	_, err = oc.Exchange(ctx, "a-code")
	var re *oauth2.RetrieveError
	require.ErrorAs(t, err, &re, "an exchange without the verifier is refused")
	assert.Equal(t, "invalid_grant", re.ErrorCode)
	assert.Equal(t, http.StatusBadRequest, re.Response.StatusCode)

	_, err = oc.Exchange(ctx, "", oauth2.VerifierOption("a-verifier"))
	require.ErrorAs(t, err, &re, "an exchange without a code is refused")
}
