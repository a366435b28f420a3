package engine

import (
	"context"
	"fmt"
	"time"

	"github.com/flowdhq/flowd/states"
)

// ExportQuery selects the records Export writes. Zero fields select everything.
type ExportQuery struct {
	// Flow limits the export to one flow's history.
	Flow string
	// Since limits the export to the flows that have a record at or after
	// it. Each such flow is exported whole, from its first record, so the
	// export still replays: a history cut in the middle would not.
	Since time.Time
}

// Export calls fn for the selected records in global (Seq) order. Records
// hold no secrets, so an export is safe to attach to a bug report. fn's
// error stops the export and is returned.
func (e *Engine) Export(ctx context.Context, q ExportQuery, fn func(states.Record) error) error {
	if q.Flow != "" {
		h, err := e.History(ctx, q.Flow)
		if err != nil {
			return err
		}
		if !q.Since.IsZero() && !flowTouchedSince(h, q.Since) {
			return nil
		}
		for _, rec := range h {
			if err := fn(rec); err != nil {
				return err
			}
		}
		return nil
	}
	if q.Since.IsZero() {
		if err := e.log.Scan(ctx, 0, fn); err != nil {
			return fmt.Errorf("export the log: %w", err)
		}
		return nil
	}
	// Two passes: find the flows touched since q.Since, then write them whole.
	touched := map[string]bool{}
	err := e.log.Scan(ctx, 0, func(rec states.Record) error {
		if !rec.Time.Before(q.Since) {
			touched[rec.Flow] = true
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("export the log: %w", err)
	}
	if len(touched) == 0 {
		return nil
	}
	err = e.log.Scan(ctx, 0, func(rec states.Record) error {
		if touched[rec.Flow] {
			return fn(rec)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("export the log: %w", err)
	}
	return nil
}

func flowTouchedSince(h []states.Record, since time.Time) bool {
	return len(h) > 0 && !h[len(h)-1].Time.Before(since)
}
