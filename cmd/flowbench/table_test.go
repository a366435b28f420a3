package main

import (
	"bytes"
	"math"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestMedian(t *testing.T) {
	assert.True(t, math.IsNaN(median(nil)), "no samples has no median")
	assert.Equal(t, 3.0, median([]float64{5, 1, 3}))
	assert.Equal(t, 2.5, median([]float64{4, 1, 3, 2}), "an even count takes the mean of the middle two")
	assert.Equal(t, 2.0, median([]float64{math.NaN(), 2}), "a failed sample is left out")
	xs := []float64{3, 1, 2}
	median(xs)
	assert.Equal(t, []float64{3, 1, 2}, xs, "median must not reorder the caller's samples")
}

func TestRatioIsMedianOfPerRunRatios(t *testing.T) {
	// Run 2 is a slow moment for both sides: its ratio is still 0.5, and
	// the median of per-run ratios says so, where a ratio of medians
	// would not.
	r := &Row{Target: Target{AtLeast, 0.5}}
	r.Add(10, 20)
	r.Add(1, 2)
	r.Add(30, 40)
	assert.Equal(t, []float64{0.5, 0.5, 0.75}, r.Ratios())
	assert.Equal(t, 0.5, r.Ratio())
	met, ok := r.Met()
	assert.True(t, ok)
	assert.True(t, met, "a ratio exactly at an at-least target meets it")

	r.Base[0] = 0 // a run whose baseline failed is left out, not divided by
	assert.Equal(t, []float64{0.5, 0.75}, r.Ratios())
}

func TestTargets(t *testing.T) {
	cases := []struct {
		target Target
		v      float64
		met    bool
	}{
		{Target{AtLeast, 0.5}, 0.49, false},
		{Target{AtLeast, 10}, 12, true},
		{Target{AtMost, 1.5}, 1.5, true},
		{Target{AtMost, 1.3}, 2.04, false},
	}
	for _, c := range cases {
		met, ok := c.target.met(c.v)
		assert.True(t, ok)
		assert.Equal(t, c.met, met, "%s with %g", c.target, c.v)
	}
	_, ok := Target{}.met(1)
	assert.False(t, ok, "a row without a target is neither met nor missed")
	_, ok = Target{AtLeast, 1}.met(math.NaN())
	assert.False(t, ok, "a row without samples is neither met nor missed")
}

func TestCountRowJudgesTheValue(t *testing.T) {
	r := &Row{Count: true, Target: Target{AtMost, 0}, Fig: []float64{0, 0, 1}}
	met, ok := r.Met()
	assert.True(t, ok)
	assert.True(t, met, "the median count is 0")
	r.Fig = []float64{1, 1, 0}
	met, _ = r.Met()
	assert.False(t, met)
}

func TestPrint(t *testing.T) {
	ok := &Row{Item: "1a", Figure: "transitions", Unit: "/s", Baseline: "raw/s", Target: Target{AtLeast, 0.5}}
	ok.Add(12000, 20000)
	missed := &Row{Item: "5", Figure: "bytes per event", Unit: "B", Baseline: "record", Target: Target{AtMost, 1.3}, Note: "counts everything"}
	missed.Add(546, 267)
	info := &Row{Item: "1c", Figure: "transitions", Unit: "/s", Baseline: "memlog/s"}
	info.Add(1, 4)
	count := &Row{Item: "7b", Figure: "wake-ups", Unit: "count", Count: true, Target: Target{AtMost, 0}, Fig: []float64{0}}
	var out bytes.Buffer
	require.NoError(t, Print(&out, []*Row{ok, missed, info, count}))
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	require.Len(t, lines, 7, out.String())
	assert.Contains(t, lines[0], "ratio (median")
	assert.Regexp(t, `^1a .*12k .*20k .*0\.60x \(0\.60-0\.60\) .*>= 0\.5x +yes$`, lines[1])
	assert.Regexp(t, `^5 .*2\.04x.*<= 1\.3x +NO$`, lines[2])
	assert.Regexp(t, `^1c .*0\.25x.* - +-$`, lines[3])
	assert.Regexp(t, `^7b .*= 0 +yes$`, lines[4])
	assert.Equal(t, "notes:", lines[5])
	assert.Contains(t, lines[6], "5: counts everything")
}

func TestNum(t *testing.T) {
	assert.Equal(t, "-", num(math.NaN()))
	assert.Equal(t, "1.5M", num(1_500_000))
	assert.Equal(t, "22k", num(22_000))
	assert.Equal(t, "4243", num(4243))
	assert.Equal(t, "0.429", num(0.4291))
	assert.Equal(t, "0", num(0))
}
