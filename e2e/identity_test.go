package e2e

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowdhq/flowd/engine"
	"github.com/flowdhq/flowd/internal/dextest"
	"github.com/flowdhq/flowd/internal/identity"
	"github.com/flowdhq/flowd/states"
)

// Dex signs real ID tokens and echoes the nonce flowd sends: flowd's
// identity check (go-oidc against Dex's JWKS, iss, aud, exp, nonce)
// accepts them and records who signed in; the same check configured for
// another client refuses them as issued to someone else.
func TestEngineVerifiesDexIDToken(t *testing.T) {
	r := newEngineRig(t, dextest.Options{})
	dex := identity.Provider{Name: dexProvider, ClientID: dextest.ClientID, IDTokenIssuer: r.dex.Issuer, JWKSURL: r.dex.Issuer + "/keys"}
	r.identify = identity.New([]identity.Provider{dex}, identity.Options{})
	r.restart()

	f := r.connect(dexProvider)
	require.Equal(t, states.Complete, f.State, "flow %+v", f)
	assert.NotEmpty(t, f.Subject, "the ID token's sub is recorded")
	assert.NotEmpty(t, f.Email)
	assert.Equal(t, f.Email, f.Account, "Dex's verified email names the account")
	_, st, err := r.eng.Token(context.Background(), engine.TokenKey{Provider: dexProvider, Account: f.Account})
	require.NoError(t, err)
	assert.Equal(t, f.ID, st.Flow)

	dex.ClientID = "someone-else"
	r.identify = identity.New([]identity.Provider{dex}, identity.Options{})
	r.restart()
	f = r.connect(dexProvider)
	assert.Equal(t, states.Error, f.State)
	assert.Equal(t, states.IdentityInvalid, f.Reason)
	assert.Contains(t, f.Message, "audience")
}
