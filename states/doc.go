// Package states is the flowd machine: the states a connect flow moves
// through, the events that move it, the one transition table both the engine
// and replay run, the terminal reasons shown to users, and the event log's
// record type with its schema version.
//
// The package is pure. It does no I/O, reads no clock and draws no random
// numbers: every time it needs is in the records it is given. That is what
// lets a recorded log be replayed against the current code and give the same
// answer on any machine.
//
// The machine at a glance (see Table and docs/machine.md):
//
//	(new) --created--> pending --url_issued--> awaiting_callback
//	awaiting_callback --exchange_started--> awaiting_callback (exchanging)
//	awaiting_callback (exchanging) --exchange_succeeded--> complete
//	pending|awaiting_callback --failed(reason)--> error
//	pending|awaiting_callback --deadline_passed(reason)--> expired
//	awaiting_callback|complete|error|expired --callback_ignored--> (unchanged)
//
// Caveats: Apply checks a record against the table and against the rules
// the table cannot express (a completion needs a started exchange, only the
// exchange ends an exchanging flow, each terminal event needs a reason of
// its kind, an ignored callback says truthfully why, the first record must
// carry a deadline). It does not check global sequence order across flows; Replay
// does.
package states
