package persist

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A record's stored form leaves out the head Encode wrote, and reading puts
// it back: quoteFlow must quote an id as encoding/json does, or records
// would not read back as they were written.
func TestQuoteFlowMatchesJSON(t *testing.T) {
	for _, id := range []string{"", "bmV3ZXJGbG93MDAwMDAwMDAy", "a-b_c", "<&>", "quote\"", "é", "bad\xff", "sp ace"} {
		want, err := json.Marshal(id)
		require.NoError(t, err)
		got, err := quoteFlow(id)
		require.NoError(t, err)
		assert.Equal(t, string(want), string(got), "%q", id)
	}
}
