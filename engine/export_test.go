package engine_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowdhq/flowd/engine"
	"github.com/flowdhq/flowd/states"
)

func exported(t *testing.T, h *harness, q engine.ExportQuery) []states.Record {
	t.Helper()
	var out []states.Record
	require.NoError(t, h.e.Export(h.ctx, q, func(r states.Record) error {
		out = append(out, r)
		return nil
	}))
	return out
}

// An export is in global order, selects one flow on request, and with
// Since keeps whole histories of the flows touched since then, so that what
// it writes still replays.
func TestExport(t *testing.T) {
	h := newHarness(t)
	old := h.start("")
	h.clk.Advance(time.Minute)
	mark := h.clk.Now()
	recent := h.start("bob")
	_, err := h.e.Cancel(h.ctx, old.ID)
	require.NoError(t, err)

	all := exported(t, h, engine.ExportQuery{})
	require.Len(t, all, 5, "created+url_issued twice, and the cancel")
	for i := 1; i < len(all); i++ {
		assert.Greater(t, all[i].Seq, all[i-1].Seq)
	}
	_, err = states.Replay(all, nil)
	require.NoError(t, err)

	one := exported(t, h, engine.ExportQuery{Flow: recent.ID})
	require.Len(t, one, 2)
	assert.Equal(t, recent.ID, one[0].Flow)

	since := exported(t, h, engine.ExportQuery{Since: mark})
	require.Len(t, since, 5, "the old flow was canceled after the mark, so it is exported whole")
	_, err = states.Replay(since, nil)
	require.NoError(t, err, "a --since export replays")

	none := exported(t, h, engine.ExportQuery{Since: h.clk.Now().Add(time.Hour)})
	assert.Empty(t, none)

	_, err = h.e.Status(h.ctx, "nope")
	require.ErrorIs(t, err, engine.ErrUnknownState)
	err = h.e.Export(h.ctx, engine.ExportQuery{Flow: "nope"}, func(states.Record) error { return nil })
	assert.ErrorIs(t, err, engine.ErrUnknownState)
}
