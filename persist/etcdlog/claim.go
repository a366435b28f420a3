package etcdlog

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// Claims: *Log implements engine.Claimer with one etcd lease per Log value
// (a concurrency.Session), granted on the first Claim and kept alive until
// Close; a claim is the key c/<key> holding the writer id, under that lease.

// DefaultClaimTTL is Options.ClaimTTL's default.
const DefaultClaimTTL = 10 * time.Second

// maxClaimKey bounds a claim's key: room for a flow id (maxFlowID) and
// the name of the claim's family before it ("device/").
const maxClaimKey = 2 * maxFlowID

// closeRevokeTimeout bounds how long Close tries to revoke the claims'
// lease; past it (etcd unreachable) the claims lapse with the lease.
const closeRevokeTimeout = time.Second

func (l *Log) claimKey(key string) string { return l.prefix + "c/" + key }

// newWriterID draws the id a Log value writes into the claims it holds.
func newWriterID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return base64.RawURLEncoding.EncodeToString(b)
}

// ttlSeconds is a claim TTL in whole seconds, as etcd grants leases: at
// least one, rounded up.
func ttlSeconds(d time.Duration) int {
	return max(1, int(math.Ceil(d.Seconds())))
}

// checkClaimKey refuses a key that cannot name a claim.
func checkClaimKey(op, key string) error {
	switch {
	case key == "":
		return fmt.Errorf("%s: empty claim key", op)
	case len(key) > maxClaimKey:
		return fmt.Errorf("%s: claim key of %d bytes (at most %d)", op, len(key), maxClaimKey)
	case strings.ContainsRune(key, 0):
		return fmt.Errorf("%s: claim key holds a NUL byte", op)
	}
	return nil
}

// session returns the live session whose lease the claims are under,
// granting a new one on the first claim and after the last one ended (its
// lease expired: etcd unreachable for longer than the TTL). It is nil with
// no error once the log was closed.
func (l *Log) session(ctx context.Context, op string) (*concurrency.Session, error) {
	l.claimMu.Lock()
	defer l.claimMu.Unlock()
	if l.sess != nil {
		select {
		case <-l.sess.Done():
			l.sess = nil
		default:
			return l.sess, nil
		}
	}
	if l.closed.Load() {
		return nil, nil
	}
	// The grant is bounded and classified like every request; the session
	// then keeps the lease alive under the log's own context, not ctx.
	var grant *clientv3.LeaseGrantResponse
	err := l.call(ctx, op, func(ctx context.Context) (err error) {
		grant, err = l.cli.Grant(ctx, int64(l.claimTTL))
		return err
	})
	if err != nil {
		return nil, err
	}
	s, err := concurrency.NewSession(l.cli, concurrency.WithTTL(l.claimTTL), concurrency.WithLease(grant.ID), concurrency.WithContext(l.life))
	if err != nil {
		l.revoke(grant.ID)
		return nil, fmt.Errorf("%s: keep the claims' lease alive: %w", op, err)
	}
	l.sess = s
	return s, nil
}

// dropSession forgets s if it is still the current session, so that the
// next claim grants a new lease.
func (l *Log) dropSession(s *concurrency.Session) {
	l.claimMu.Lock()
	defer l.claimMu.Unlock()
	if l.sess == s {
		l.sess = nil
		s.Orphan()
	}
}

// revoke revokes a lease, bounded by closeRevokeTimeout, ignoring failure:
// an unrevoked lease expires by itself.
func (l *Log) revoke(id clientv3.LeaseID) {
	if l.cli.Ctx().Err() != nil {
		return // a given Client closed first: nothing can be sent
	}
	ctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(context.Background()), min(closeRevokeTimeout, l.timeout))
	defer cancel()
	_, _ = l.cli.Revoke(ctx, id)
}

// closeSession ends the claims' session at Close: it revokes the lease, so
// every claim of this writer is released at once.
func (l *Log) closeSession() {
	l.claimMu.Lock()
	s := l.sess
	l.sess = nil
	l.claimMu.Unlock()
	if s != nil {
		// Session.Close would wait up to the TTL for the revoke; Close
		// waits at most closeRevokeTimeout.
		s.Orphan()
		l.revoke(s.Lease())
	}
	if l.stop != nil {
		l.stop()
	}
}

// Claim implements engine.Claimer: it takes c/<key> for this Log value
// unless another one holds it, in one transaction. A claim lasts until
// Release, Close, or Options.ClaimTTL after this process stopped renewing
// its lease (it died, or lost etcd for that long).
func (l *Log) Claim(ctx context.Context, key string) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	// The key names a flow: kept out of errors, as flow ids are (the
	// caller says which flow, shortened).
	op := "claim"
	if err := checkClaimKey(op, key); err != nil {
		return false, err
	}
	k := l.claimKey(key)
	for attempt := 0; ; attempt++ {
		s, err := l.session(ctx, op)
		if err != nil {
			return false, err
		}
		if s == nil {
			return false, closedErr(ctx, op)
		}
		lease := s.Lease()
		// Free: take it. Ours under an older lease (a session that ended
		// while etcd still kept its lease): move it under this one, or it
		// would lapse with the old lease. Else report the holder.
		var resp *clientv3.TxnResponse
		err = l.call(ctx, op, func(ctx context.Context) (err error) {
			resp, err = l.cli.Txn(ctx).
				If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).
				Then(clientv3.OpPut(k, l.id, clientv3.WithLease(lease))).
				Else(clientv3.OpTxn(
					[]clientv3.Cmp{
						clientv3.Compare(clientv3.Value(k), "=", l.id),
						clientv3.Compare(clientv3.LeaseValue(k), "!=", lease),
					},
					[]clientv3.Op{clientv3.OpPut(k, l.id, clientv3.WithLease(lease))},
					[]clientv3.Op{clientv3.OpGet(k)})).
				Commit()
			return err
		})
		if errors.Is(err, rpctypes.ErrLeaseNotFound) && attempt == 0 {
			// The lease expired before the session noticed: grant anew.
			l.dropSession(s)
			continue
		}
		if err != nil {
			return false, err
		}
		if resp.Succeeded {
			return true, nil
		}
		inner := resp.Responses[0].GetResponseTxn()
		if inner.GetSucceeded() {
			return true, nil
		}
		kvs := inner.GetResponses()[0].GetResponseRange().GetKvs()
		return len(kvs) == 1 && string(kvs[0].Value) == l.id, nil
	}
}

// Release implements engine.Claimer: it deletes c/<key> if this Log value
// holds it, in one transaction.
func (l *Log) Release(ctx context.Context, key string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	op := "release claim"
	if err := checkClaimKey(op, key); err != nil {
		return err
	}
	k := l.claimKey(key)
	return l.call(ctx, op, func(ctx context.Context) error {
		_, err := l.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.Value(k), "=", l.id)).
			Then(clientv3.OpDelete(k)).
			Commit()
		return err
	})
}
