package main

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
)

// Dir says which way a target points.
type Dir int

// Directions of a target.
const (
	// NoTarget: the row is informative only.
	NoTarget Dir = iota
	// AtLeast: the ratio must be at least the target (throughput).
	AtLeast
	// AtMost: the ratio must be at most the target (latency, bytes, time).
	AtMost
)

// Target is what a row's ratio (or, for a count, its value) must reach.
type Target struct {
	Dir Dir
	X   float64
}

func (t Target) String() string {
	switch t.Dir {
	case AtLeast:
		return fmt.Sprintf(">= %gx", t.X)
	case AtMost:
		return fmt.Sprintf("<= %gx", t.X)
	}
	return "-"
}

// met reports whether v meets t; ok is false when there is no target or no value.
func (t Target) met(v float64) (met, ok bool) {
	if t.Dir == NoTarget || math.IsNaN(v) {
		return false, false
	}
	if t.Dir == AtLeast {
		return v >= t.X, true
	}
	return v <= t.X, true
}

// Row is one comparison. Figure and Base hold one sample per run, taken
// side by side in that run; the ratio is computed per run and its median
// is what is judged, so a machine that slows down for one run moves both
// sides of that run's ratio together.
type Row struct {
	Item     string // issue item number, "1a", "4b"...
	Figure   string // what is measured
	Unit     string // unit of Figure and Base samples ("transitions/s", "ms", "B/flow")
	Baseline string // what it is compared with
	Fig      []float64
	Base     []float64
	Target   Target
	// Count rows (no baseline) judge the median of Fig against Target.X exactly: "must be 0".
	Count bool
	// Note is shown under the table: what was skipped, or why.
	Note string
}

// Add appends one run's pair of samples.
func (r *Row) Add(fig, base float64) {
	r.Fig = append(r.Fig, fig)
	r.Base = append(r.Base, base)
}

// Ratios returns fig/base for each run that has both.
func (r *Row) Ratios() []float64 {
	var out []float64
	for i := range min(len(r.Fig), len(r.Base)) {
		if r.Base[i] != 0 && !math.IsNaN(r.Base[i]) && !math.IsNaN(r.Fig[i]) {
			out = append(out, r.Fig[i]/r.Base[i])
		}
	}
	return out
}

// Ratio is the median of the per-run ratios, NaN without any.
func (r *Row) Ratio() float64 { return median(r.Ratios()) }

// Met reports whether the row meets its target, and false for ok when it
// has no target or no samples.
func (r *Row) Met() (met, ok bool) {
	if r.Count {
		v := median(r.Fig)
		if r.Target.Dir == NoTarget || math.IsNaN(v) {
			return false, false
		}
		return v == r.Target.X, true
	}
	return r.Target.met(r.Ratio())
}

// median returns the median of xs (mean of the middle two for an even
// count), NaN for none. xs is not modified.
func median(xs []float64) float64 {
	var s []float64
	for _, x := range xs {
		if !math.IsNaN(x) {
			s = append(s, x)
		}
	}
	if len(s) == 0 {
		return math.NaN()
	}
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// spread returns min and max of xs, ignoring NaN.
func spread(xs []float64) (lo, hi float64) {
	lo, hi = math.NaN(), math.NaN()
	for _, x := range xs {
		if math.IsNaN(x) {
			continue
		}
		if math.IsNaN(lo) || x < lo {
			lo = x
		}
		if math.IsNaN(hi) || x > hi {
			hi = x
		}
	}
	return lo, hi
}

// num formats a figure compactly: 3 significant digits, k/M suffixes for big values.
func num(v float64) string {
	switch a := math.Abs(v); {
	case math.IsNaN(v):
		return "-"
	case a >= 1e6:
		return fmt.Sprintf("%.3gM", v/1e6)
	case a >= 1e4:
		return fmt.Sprintf("%.3gk", v/1e3)
	case a >= 100 || v == math.Trunc(v):
		return fmt.Sprintf("%.0f", v)
	default:
		return fmt.Sprintf("%.3g", v)
	}
}

// Print writes rows as an aligned table, then their notes.
func Print(w io.Writer, rows []*Row) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "#\tfigure\tmedian\tbaseline\tmedian\tratio (median, min-max)\ttarget\tmet?")
	for _, r := range rows {
		base := "-"
		if len(r.Base) > 0 {
			base = num(median(r.Base))
		}
		ratio := "-"
		if rs := r.Ratios(); len(rs) > 0 {
			lo, hi := spread(rs)
			ratio = fmt.Sprintf("%.2fx (%.2f-%.2f)", median(rs), lo, hi)
		}
		target := r.Target.String()
		if r.Count && r.Target.Dir != NoTarget {
			target = fmt.Sprintf("= %g", r.Target.X)
		}
		met := "-"
		if m, ok := r.Met(); ok {
			met = map[bool]string{true: "yes", false: "NO"}[m]
		}
		baseline := r.Baseline
		if baseline == "" {
			baseline = "-"
		}
		fmt.Fprintf(tw, "%s\t%s [%s]\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Item, r.Figure, r.Unit, num(median(r.Fig)), baseline, base, ratio, target, met)
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("print table: %w", err)
	}
	var notes []string
	for _, r := range rows {
		if r.Note != "" {
			notes = append(notes, fmt.Sprintf("  %s: %s", r.Item, r.Note))
		}
	}
	if len(notes) > 0 {
		if _, err := fmt.Fprintf(w, "notes:\n%s\n", strings.Join(notes, "\n")); err != nil {
			return fmt.Errorf("print table: %w", err)
		}
	}
	return nil
}
