package engine_test

import (
	"bytes"
	"encoding/base64"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowdhq/flowd/engine"
)

// A state never begins with '-', which command lines take for flags: a
// random first byte that would encode to '-' is drawn again; the rest of
// the state and the verifier are the bytes drawn (issue 11, part 4).
func TestStateNeverBeginsWithDash(t *testing.T) {
	key := bytes.Repeat([]byte{1}, 32) // the fingerprint key, drawn at Open
	stateBytes := append([]byte{0xF8}, bytes.Repeat([]byte{0x11}, 31)...)
	require.Equal(t, byte('-'), base64.RawURLEncoding.EncodeToString(stateBytes)[0], "the draw would begin the state with '-'")
	verifierBytes := bytes.Repeat([]byte{0x22}, 32)
	// Two more draws of the first byte that encode to '-' (0xFB, 0xF9), then 0x7C.
	src := bytes.NewReader(bytes.Join([][]byte{key, stateBytes, verifierBytes, {0xFB, 0xF9, 0x7C}}, nil))
	h := newHarness(t, func(c *engine.Config) { c.Rand = src })

	st := h.start("")
	want := base64.RawURLEncoding.EncodeToString(append([]byte{0x7C}, stateBytes[1:]...))
	assert.Equal(t, want, st.ID)
	assert.NotEqual(t, byte('-'), st.ID[0])
	assert.Len(t, st.ID, 43)
	v, ok, err := h.log.Secret(h.ctx, "verifier/"+st.ID)
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, base64.RawURLEncoding.EncodeToString(verifierBytes), string(v), "the verifier is the second 32 bytes drawn")
	assert.Zero(t, src.Len(), "every byte drawn was used")
}

// A source that only ever yields bytes encoding to '-' is an error, not a hang.
func TestStateFromBrokenRandomSourceFails(t *testing.T) {
	key := bytes.Repeat([]byte{1}, 32)
	src := bytes.NewReader(append(key, bytes.Repeat([]byte{0xFA}, 1000)...))
	h := newHarness(t, func(c *engine.Config) { c.Rand = src })
	_, err := h.e.Start(h.ctx, engine.StartRequest{Provider: "gh"})
	require.ErrorIs(t, err, engine.ErrRandomSource)
	flows, err := h.e.List(h.ctx, engine.Filter{})
	require.NoError(t, err)
	assert.Empty(t, flows, "no flow was recorded")
}
