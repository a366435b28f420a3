package persist

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"

	"github.com/flowdhq/flowd/engine/logtest"
	"github.com/flowdhq/flowd/states"
)

// A secret written with a flow's first records is a flow secret, numbered;
// others are kept by name. Deleted and written again within one commit, a
// secret stays where it was (bucket and number): a reader that looked it up
// before the commit still finds it after.
func TestSecretDeletedAndRewrittenInOneCommitStaysPut(t *testing.T) {
	ctx := context.Background()
	db, err := Open(filepath.Join(t.TempDir(), "flowd.db"), Options{})
	require.NoError(t, err)
	defer db.Close()
	f := logtest.NewFlow(logtest.Base)
	require.NoError(t, db.Append(ctx, []states.Record{f.Created()}, map[string][]byte{"verifier/x": []byte("one")}))
	require.NoError(t, db.Append(ctx, nil, map[string][]byte{"token/x": []byte("one")}))
	before := db.secrets.lookup("verifier/x")
	require.NotZero(t, before, "a secret written with a flow's first record is numbered")
	require.Zero(t, db.secrets.lookup("token/x"), "a secret written on its own is kept by name")

	seal := func(name, v string) []byte {
		b, err := db.sealer.Seal(name, []byte(v))
		require.NoError(t, err)
		return b
	}
	for _, name := range []string{"verifier/x", "token/x"} {
		require.NoError(t, db.commits.do(func(tx *bolt.Tx) error {
			b := buckets(tx)
			if err := db.secrets.set(b, name, nil, false); err != nil {
				return err
			}
			// As if a new flow's append wrote it: it still stays put.
			return db.secrets.set(b, name, seal(name, "two"), true)
		}))
		v, ok, err := db.Secret(ctx, name)
		require.NoError(t, err)
		assert.True(t, ok)
		assert.Equal(t, []byte("two"), v)
	}
	assert.Equal(t, before, db.secrets.lookup("verifier/x"))
	assert.Zero(t, db.secrets.lookup("token/x"), "a secret kept by name does not become numbered")

	// A transaction that rolls back changes nothing in the index.
	require.Error(t, db.commits.do(func(tx *bolt.Tx) error {
		if err := db.secrets.set(buckets(tx), "verifier/x", nil, false); err != nil {
			return err
		}
		return assert.AnError
	}))
	assert.Equal(t, before, db.secrets.lookup("verifier/x"))
	_, ok, err := db.Secret(ctx, "verifier/x")
	require.NoError(t, err)
	assert.True(t, ok, "a rolled-back delete must not hide the secret")

	// Deleted for good, a name may come back kept by name.
	require.NoError(t, db.Append(ctx, nil, map[string][]byte{"verifier/x": nil}))
	require.NoError(t, db.Append(ctx, nil, map[string][]byte{"verifier/x": []byte("three")}))
	assert.Zero(t, db.secrets.lookup("verifier/x"))
	v, ok, err := db.Secret(ctx, "verifier/x")
	require.NoError(t, err)
	assert.True(t, ok)
	assert.Equal(t, []byte("three"), v)
}
