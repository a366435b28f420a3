package persist

import "slices"

// liveHeads holds the number and head of every live flow by id: nearly
// every append is to a live flow, and finds them here instead of looking
// the id up (in the id index or the ids bucket) and reading and decoding
// its head, work that would otherwise run inside the group commit's
// transaction, which every append in the commit waits for. It mirrors the
// live index: Open fills it from there (verify reads every live flow), and
// each append updates both. It costs about 100 bytes a live flow.
//
// Only the committer uses it (Open fills it before the first commit), so it
// needs no lock: an append's changes go to a pending overlay, applied once
// its transaction committed, as for secretIndex.
type liveHeads struct {
	heads   map[string]liveHead
	pending map[string]*liveHead // nil: no longer live
}

type liveHead struct {
	num uint64
	h   head
}

// find returns flow's number and head if it is live.
func (c *liveHeads) find(flow string) (uint64, head, bool) {
	if p, ok := c.pending[flow]; ok {
		if p == nil {
			return 0, head{}, false
		}
		return p.num, p.h, true
	}
	lh, ok := c.heads[flow]
	// The head's seqs are appended to: never into the committed array.
	lh.h.seqs = slices.Clip(lh.h.seqs)
	return lh.num, lh.h, ok
}

// set records flow's head after an append: live or not.
func (c *liveHeads) set(flow string, num uint64, h head, live bool) {
	if !live {
		c.pending[flow] = nil
		return
	}
	c.pending[flow] = &liveHead{num: num, h: h}
}

func (c *liveHeads) begin() { clear(c.pending) }

func (c *liveHeads) settle(committed bool) {
	if committed {
		for flow, p := range c.pending {
			if p == nil {
				delete(c.heads, flow)
			} else {
				c.heads[flow] = *p
			}
		}
	}
	clear(c.pending)
}
