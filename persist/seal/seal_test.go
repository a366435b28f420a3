package seal_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowdhq/flowd/persist/seal"
)

func TestSealOpenRoundTrip(t *testing.T) {
	key := bytes.Repeat([]byte{7}, seal.KeySize)
	s, err := seal.New(key)
	require.NoError(t, err)

	for _, pt := range [][]byte{[]byte("pkce-verifier-abc"), {}, bytes.Repeat([]byte{0}, 4096)} {
		sealed, err := s.Seal("verifier/flow1", pt)
		require.NoError(t, err)
		if len(pt) > 0 {
			assert.NotContains(t, string(sealed), string(pt), "the plaintext shows through")
		}
		got, err := s.Open("verifier/flow1", sealed)
		require.NoError(t, err)
		assert.Equal(t, pt, got)
	}
}

func TestSealNoncesDiffer(t *testing.T) {
	s, err := seal.New(bytes.Repeat([]byte{1}, seal.KeySize))
	require.NoError(t, err)
	a, err := s.Seal("k", []byte("same"))
	require.NoError(t, err)
	b, err := s.Seal("k", []byte("same"))
	require.NoError(t, err)
	assert.NotEqual(t, a, b, "two seals of one plaintext must not be equal (random nonce)")
}

func TestOpenRefusesOtherNameKeyOrDamage(t *testing.T) {
	s, err := seal.New(bytes.Repeat([]byte{1}, seal.KeySize))
	require.NoError(t, err)
	other, err := seal.New(bytes.Repeat([]byte{2}, seal.KeySize))
	require.NoError(t, err)
	sealed, err := s.Seal("token/github", []byte("gho_secret"))
	require.NoError(t, err)

	_, err = s.Open("token/google", sealed)
	assert.ErrorIs(t, err, seal.ErrOpen, "a value moved to another name must not open")
	_, err = other.Open("token/github", sealed)
	assert.ErrorIs(t, err, seal.ErrOpen, "another key must not open it")
	damaged := bytes.Clone(sealed)
	damaged[len(damaged)-1] ^= 1
	_, err = s.Open("token/github", damaged)
	assert.ErrorIs(t, err, seal.ErrOpen)
	_, err = s.Open("token/github", []byte{1, 2, 3})
	assert.ErrorIs(t, err, seal.ErrOpen)
	assert.NotContains(t, err.Error(), "gho_secret")
}

func TestNewRefusesWrongKeySize(t *testing.T) {
	_, err := seal.New(make([]byte, 16))
	assert.ErrorIs(t, err, seal.ErrKeySize)
}

func TestCreateAndLoadKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "flowd.db.key")
	key, err := seal.CreateKey(path)
	require.NoError(t, err)
	require.Len(t, key, seal.KeySize)

	info, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), info.Mode().Perm())

	got, err := seal.LoadKey(path)
	require.NoError(t, err)
	assert.Equal(t, key, got)

	_, err = seal.CreateKey(path)
	assert.Error(t, err, "CreateKey must never replace an existing key")
	got, err = seal.LoadKey(path)
	require.NoError(t, err)
	assert.Equal(t, key, got, "the key survived the refused create")

	entries, err := os.ReadDir(filepath.Dir(path))
	require.NoError(t, err)
	assert.Len(t, entries, 1, "no temporary files left behind")
}

func TestLoadKeyRefusals(t *testing.T) {
	dir := t.TempDir()

	_, err := seal.LoadKey(filepath.Join(dir, "missing.key"))
	assert.ErrorIs(t, err, seal.ErrKeyMissing)

	short := filepath.Join(dir, "short.key")
	require.NoError(t, os.WriteFile(short, []byte("too short"), 0o600))
	_, err = seal.LoadKey(short)
	assert.ErrorIs(t, err, seal.ErrKeySize)
	assert.Contains(t, err.Error(), short)

	open := filepath.Join(dir, "open.key")
	require.NoError(t, os.WriteFile(open, make([]byte, seal.KeySize), 0o600))
	require.NoError(t, os.Chmod(open, 0o644))
	_, err = seal.LoadKey(open)
	assert.ErrorIs(t, err, seal.ErrKeyMode)
	assert.Contains(t, err.Error(), "chmod 600 "+open, "the error says how to fix it")
}
