package persist

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"
)

// Two appends in one commit that delete and then rewrite a secret leave it
// under the number it had: a reader that looked the number up before the
// commit still finds it after.
func TestSecretDeletedAndRewrittenInOneCommitKeepsItsNumber(t *testing.T) {
	db, err := Open(filepath.Join(t.TempDir(), "flowd.db"), Options{})
	require.NoError(t, err)
	defer db.Close()
	require.NoError(t, db.Append(context.Background(), nil, map[string][]byte{"s": []byte("one")}))
	before := db.secrets.lookup("s")
	require.NotZero(t, before)

	sealed, err := db.sealer.Seal("s", []byte("two"))
	require.NoError(t, err)
	require.NoError(t, db.commits.do(func(tx *bolt.Tx) error {
		b := buckets(tx)
		if err := db.secrets.del(b.secrets, "s"); err != nil {
			return err
		}
		return db.secrets.put(b.secrets, "s", sealed)
	}))
	assert.Equal(t, before, db.secrets.lookup("s"))
	v, ok, err := db.Secret(context.Background(), "s")
	require.NoError(t, err)
	assert.True(t, ok)
	assert.Equal(t, []byte("two"), v)

	// A transaction that rolls back changes nothing in the index.
	require.Error(t, db.commits.do(func(tx *bolt.Tx) error {
		if err := db.secrets.del(buckets(tx).secrets, "s"); err != nil {
			return err
		}
		return assert.AnError
	}))
	assert.Equal(t, before, db.secrets.lookup("s"))
	_, ok, err = db.Secret(context.Background(), "s")
	require.NoError(t, err)
	assert.True(t, ok, "a rolled-back delete must not hide the secret")
}
