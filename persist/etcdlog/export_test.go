package etcdlog

import clientv3 "go.etcd.io/etcd/client/v3"

// OrphanClaimSession stops renewing the lease of l's claims without
// revoking it, as when the session ends while etcd still keeps the lease
// (the client's keepalives lost for a TTL, the server's lease not yet
// expired), and returns that lease.
func OrphanClaimSession(l *Log) clientv3.LeaseID {
	l.claimMu.Lock()
	s := l.sess
	l.claimMu.Unlock()
	if s == nil {
		return clientv3.NoLease
	}
	s.Orphan()
	return s.Lease()
}
