// Package etcdlog is flowd's event log on an etcd v3 cluster, for running
// several flowd replicas behind a load balancer: a callback may land on
// any replica, and every replica sees every flow. *Log implements
// engine.Log (checked in this package's tests) and passes the same
// contract suite as the bbolt log (package persist).
//
// # Layout
//
// Every key is under Options.Prefix (default "flowd/"):
//
//	meta/format           "flowd-events-etcd 1"
//	meta/keycheck         a value sealed under the shared key: a replica
//	                      with another key refuses to open
//	r/<flow>/<flow_seq>   a record (JSON, as in the bbolt log); flow_seq is
//	                      16 hex digits, so a flow's history is one range
//	h/<flow>              the flow's head: its last flow_seq, in decimal
//	l/<flow>              present while the flow's last record is not terminal
//	x/<flow>              present once the flow became terminal; holds its n/ key
//	n/<time>/<flow>       ended index: when the flow became terminal
//	s/<name>              a secret sealed with AES-256-GCM (package seal)
//	c/<key>               a claim: the holder's writer id, under its lease
//
// # Transitions
//
// An append is one etcd transaction: it compares the flow's head with the
// flow_seq before the first record (or its absence for a new flow), and
// writes the records, the new head, the live index and the ended index,
// and the sealed secrets together. Two replicas can never both advance one
// flow: the loser writes nothing and gets an error wrapping
// engine.ErrConflict, and re-reads the flow. An append returns once etcd
// committed it, that is once a quorum of members has it in its
// write-ahead log.
//
// # Sequence numbers
//
// A record's Seq is derived from the etcd revision of the transaction that
// wrote it: revision×1000 + the record's index in that append. The
// revision is the cluster's own global commit order, so Seq increases
// strictly in commit order across every replica without a shared counter
// key that every append would contend on (appends of different flows never
// conflict). Seq is not stored in the record; it is computed from the
// record key's mod revision when read. Revisions survive restarts,
// compaction and snapshots, so a Seq is never given twice; a copy of the
// keys into another cluster (etcdctl make-mirror) renumbers them, in the
// same order.
//
// Scan has no index in Seq order (etcd cannot name a key after the revision
// it is written at), so it reads the record keys in key order and sorts
// the records after the given Seq in memory: it serves exports and
// listings. Following the log as it grows is Watch's job.
//
// # Claims
//
// *Log implements engine.Claimer: a claim is c/<key> holding the writer
// id of one Log value, put under that Log's etcd lease (granted on its
// first Claim, TTL Options.ClaimTTL, kept alive by the etcd client). Close
// revokes the lease, which releases every claim of the Log at once; a
// replica that dies or loses etcd loses its claims when the lease expires.
package etcdlog

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/client/pkg/v3/tlsutil"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/flowdhq/flowd/engine"
	"github.com/flowdhq/flowd/persist/seal"
)

// Errors Open and the log's methods return, wrapped with the operation, the
// endpoints and what to do next.
var (
	// ErrUnavailable is engine.ErrLogUnavailable, which the log's errors
	// wrap when no quorum of etcd members answered in time (members down,
	// no leader, network) or the log was closed. A write that failed this
	// way may still have been applied; flowd re-reads the flow on its next
	// transition. A write etcd refused for its space quota (the NOSPACE
	// alarm) wraps engine.ErrStorageFull.
	//
	// Deprecated: match engine.ErrLogUnavailable, which every log uses.
	ErrUnavailable = engine.ErrLogUnavailable
	// ErrNoKey: no sealing key was given. Cluster mode needs the key every
	// replica shares; flowd refuses to start without it.
	ErrNoKey = errors.New("no sealing key for the etcd store")
	// ErrKeyMismatch: the key does not open the secrets already stored
	// under the prefix: another replica uses another key.
	ErrKeyMismatch = errors.New("sealing key does not match the one the other replicas use")
	// ErrNotLog: the prefix holds keys that are not a flowd event log.
	ErrNotLog = errors.New("etcd prefix does not hold a flowd event log")
	// ErrNewerFormat: the log was written by a newer flowd.
	ErrNewerFormat = errors.New("event log written by a newer flowd")
	// ErrCorrupt: a key or record under the prefix is damaged.
	ErrCorrupt = errors.New("event log in etcd is damaged")
)

// KeyEnv is the environment variable KeyFrom reads the sealing key from:
// the 32-byte key in standard base64 (openssl rand -base64 32).
const KeyEnv = "FLOWD_SEAL_KEY"

// DefaultPrefix is where the log keeps its keys when Options.Prefix is empty.
const DefaultPrefix = "flowd/"

// Defaults of Options.
const (
	DefaultDialTimeout    = 5 * time.Second
	DefaultRequestTimeout = 5 * time.Second
)

// MaxRecords caps the records of one append: an append is one transaction,
// and etcd caps a transaction's operations (128 by default).
const MaxRecords = 64

// maxFlowID bounds flow ids, as in the bbolt log.
const maxFlowID = 1024

// seqPerRev is how many Seq values one etcd revision spans.
const seqPerRev = 1000

// Options configures Open.
type Options struct {
	// Endpoints are the etcd members' client URLs. Required unless Client is set.
	Endpoints []string
	// Prefix is prepended to every key; several flowd deployments can share
	// one etcd cluster under distinct prefixes. Default DefaultPrefix.
	Prefix string
	// TLS configures the connection to etcd; nil means plain HTTP (only on
	// a trusted network). TLSFiles builds one from PEM files.
	TLS *tls.Config
	// Username and Password authenticate to etcd when its auth is enabled.
	Username, Password string
	// Key is the 32-byte AES-256 sealing key, the same on every replica.
	// Required: KeyFrom reads it from a file or the environment.
	Key []byte
	// DialTimeout bounds connecting at Open. Default DefaultDialTimeout.
	DialTimeout time.Duration
	// RequestTimeout bounds each request to etcd; past it the request
	// fails with ErrUnavailable. Default DefaultRequestTimeout.
	RequestTimeout time.Duration
	// Client, when set, is used instead of dialing Endpoints; Close leaves
	// it open.
	Client *clientv3.Client
	// Logger receives the etcd client's logs. Default: discarded.
	Logger *zap.Logger
	// ClaimTTL is how long a claim (Claim) outlives a replica that died
	// or lost etcd without closing its log: the TTL of the lease its
	// claims are under, in whole seconds, rounded up. Default
	// DefaultClaimTTL; etcd's minimum TTL applies (a server raises a
	// shorter one to 1.5 election timeouts).
	ClaimTTL time.Duration
}

// Log is the etcd event log. It is safe for concurrent use, by any number
// of processes on the same cluster and prefix. Close it when done.
type Log struct {
	cli       *clientv3.Client
	own       bool
	prefix    string
	sealer    *seal.Sealer
	timeout   time.Duration
	endpoints string
	closed    atomic.Bool

	// Claims (claim.go): the writer id, the lease TTL in seconds, and the
	// session holding the lease, granted on the first Claim and kept
	// alive under life until Close.
	id       string
	claimTTL int
	life     context.Context
	stop     context.CancelFunc
	claimMu  sync.Mutex
	sess     *concurrency.Session
}

// Format of meta/format; a layout older code cannot read gets a new number.
const (
	formatName    = "flowd-events-etcd"
	formatVersion = 1
)

var formatValue = fmt.Sprintf("%s %d", formatName, formatVersion)

// keyCheckName is the name the key check value is sealed under.
const keyCheckName = "flowd/keycheck"

// Open connects to etcd and checks the log under the prefix, creating its
// meta keys on first use. It refuses to open without a key (ErrNoKey), with
// a key other than the one the log's secrets are sealed under
// (ErrKeyMismatch), on a prefix holding something else (ErrNotLog,
// ErrNewerFormat), and when no quorum answers within the timeouts
// (ErrUnavailable).
func Open(ctx context.Context, opts Options) (*Log, error) {
	if len(opts.Key) == 0 {
		return nil, fmt.Errorf("open etcd log: %w: give every replica the same 32-byte key (key file, or $%s)", ErrNoKey, KeyEnv)
	}
	sealer, err := seal.New(opts.Key)
	if err != nil {
		return nil, fmt.Errorf("open etcd log: %w", err)
	}
	if opts.Prefix == "" {
		opts.Prefix = DefaultPrefix
	}
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = DefaultDialTimeout
	}
	if opts.RequestTimeout <= 0 {
		opts.RequestTimeout = DefaultRequestTimeout
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.ClaimTTL <= 0 {
		opts.ClaimTTL = DefaultClaimTTL
	}
	l := &Log{prefix: opts.Prefix, sealer: sealer, timeout: opts.RequestTimeout,
		id: newWriterID(), claimTTL: ttlSeconds(opts.ClaimTTL)}
	l.life, l.stop = context.WithCancel(context.Background())
	if opts.Client != nil {
		l.cli = opts.Client
	} else {
		if len(opts.Endpoints) == 0 {
			return nil, errors.New("open etcd log: no endpoints: give the etcd members' client URLs")
		}
		cli, err := clientv3.New(clientv3.Config{
			Endpoints:   opts.Endpoints,
			DialTimeout: opts.DialTimeout,
			TLS:         opts.TLS,
			Username:    opts.Username,
			Password:    opts.Password,
			Logger:      opts.Logger,
			// Keepalives notice a dead member so the client moves to another.
			DialKeepAliveTime:    10 * time.Second,
			DialKeepAliveTimeout: 5 * time.Second,
		})
		if err != nil {
			return nil, fmt.Errorf("open etcd log at %s: %w", strings.Join(opts.Endpoints, ","), err)
		}
		l.cli, l.own = cli, true
	}
	l.endpoints = strings.Join(l.cli.Endpoints(), ",")
	if err := l.init(ctx); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// init creates or checks the meta keys. Replicas starting at once race
// through one transaction: the first creates them, the others check them.
func (l *Log) init(ctx context.Context) error {
	check, err := l.sealer.Seal(keyCheckName, []byte(formatValue))
	if err != nil {
		return fmt.Errorf("open etcd log: %w", err)
	}
	fk, kk := l.prefix+"meta/format", l.prefix+"meta/keycheck"
	var resp *clientv3.TxnResponse
	err = l.call(ctx, "open etcd log", func(ctx context.Context) (err error) {
		resp, err = l.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(fk), "=", 0)).
			Then(clientv3.OpPut(fk, formatValue), clientv3.OpPut(kk, string(check))).
			Else(clientv3.OpGet(fk), clientv3.OpGet(kk)).
			Commit()
		return err
	})
	if err != nil {
		return err
	}
	if resp.Succeeded {
		return nil
	}
	format := resp.Responses[0].GetResponseRange().GetKvs()
	if len(format) != 1 {
		return fmt.Errorf("open etcd log under %q: %w: meta/format vanished", l.prefix, ErrCorrupt)
	}
	var name string
	var version int
	if _, err := fmt.Sscanf(string(format[0].Value), "%s %d", &name, &version); err != nil || name != formatName {
		return fmt.Errorf("open etcd log under %q at %s: %w: choose another prefix", l.prefix, l.endpoints, ErrNotLog)
	}
	if version > formatVersion {
		return fmt.Errorf("open etcd log under %q: %w (format %d, this flowd reads %d): upgrade this replica", l.prefix, ErrNewerFormat, version, formatVersion)
	}
	kc := resp.Responses[1].GetResponseRange().GetKvs()
	if len(kc) != 1 {
		return fmt.Errorf("open etcd log under %q: %w: meta/keycheck is missing", l.prefix, ErrCorrupt)
	}
	if _, err := l.sealer.Open(keyCheckName, kc[0].Value); err != nil {
		return fmt.Errorf("open etcd log under %q: %w: give this replica the key file the others use", l.prefix, ErrKeyMismatch)
	}
	return nil
}

// Close revokes the lease of this log's claims, so that other replicas
// can take them at once (within a short timeout: when etcd does not
// answer, the claims lapse after Options.ClaimTTL), and closes the
// connection to etcd, unless Options.Client was given.
func (l *Log) Close() error {
	l.closed.Store(true)
	l.closeSession()
	if !l.own || l.cli == nil {
		return nil
	}
	if err := l.cli.Close(); err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("close etcd log: %w", err)
	}
	return nil
}

// Client returns the etcd client the log uses.
func (l *Log) Client() *clientv3.Client { return l.cli }

// Prefix returns the key prefix the log uses.
func (l *Log) Prefix() string { return l.prefix }

// call runs one request under the request timeout, requiring a leader so
// a member cut off from quorum fails fast instead of waiting, and turns
// the failures of an unreachable or leaderless cluster into ErrUnavailable.
func (l *Log) call(ctx context.Context, op string, fn func(ctx context.Context) error) error {
	if l.closed.Load() {
		return closedErr(ctx, op)
	}
	rctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), l.timeout)
	defer cancel()
	err := fn(rctx)
	if err == nil {
		return nil
	}
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("%s: %w", op, cerr)
	}
	if errors.Is(err, rpctypes.ErrNoSpace) {
		return fmt.Errorf("%s: %w: etcd at %s refused the write for its space quota (NOSPACE alarm): %w", op, engine.ErrStorageFull, l.endpoints, err)
	}
	if unavailable(err) || rctx.Err() != nil {
		return fmt.Errorf("%s: %w at %s: %v; flowd needs a quorum of the etcd members: check them (etcdctl endpoint health), and retry once they serve", op, engine.ErrLogUnavailable, l.endpoints, err)
	}
	return fmt.Errorf("%s on etcd %s: %w", op, l.endpoints, err)
}

// closedErr is the error of a request on a closed log.
func closedErr(ctx context.Context, op string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return fmt.Errorf("%s: %w: the log was closed", op, engine.ErrLogUnavailable)
}

// unavailable reports whether err means no quorum answered.
func unavailable(err error) bool {
	for _, target := range []error{
		rpctypes.ErrNoLeader, rpctypes.ErrNotLeader, rpctypes.ErrLeaderChanged, rpctypes.ErrStopped,
		rpctypes.ErrTimeout, rpctypes.ErrTimeoutDueToLeaderFail, rpctypes.ErrTimeoutDueToConnectionLost,
		rpctypes.ErrTimeoutWaitAppliedIndex, rpctypes.ErrUnhealthy, rpctypes.ErrNotCapable,
		context.DeadlineExceeded,
	} {
		if errors.Is(err, target) {
			return true
		}
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded:
		return true
	}
	return false
}

// KeyFrom returns the sealing key from file when it is not empty (a
// 32-byte file, mode 0600, as package seal writes), else from the
// environment variable KeyEnv (32 bytes in standard base64). It refuses
// when neither gives a key: cluster mode must not start without the key
// every replica shares.
func KeyFrom(file string) ([]byte, error) {
	if file != "" {
		return seal.LoadKey(file)
	}
	v, ok := os.LookupEnv(KeyEnv)
	if !ok || v == "" {
		return nil, fmt.Errorf("%w: set a key file shared by every replica, or $%s (create one with: openssl rand -base64 32)", ErrNoKey, KeyEnv)
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(v))
	if err != nil {
		return nil, fmt.Errorf("$%s is not base64: %w; create a key with: openssl rand -base64 32", KeyEnv, err)
	}
	if len(key) != seal.KeySize {
		return nil, fmt.Errorf("$%s holds %d bytes, want %d: %w; create a key with: openssl rand -base64 32", KeyEnv, len(key), seal.KeySize, seal.ErrKeySize)
	}
	return key, nil
}

// TLSFiles returns a client TLS configuration from PEM files: a client
// certificate and its key (both empty when etcd does not ask for client
// certificates) and the CA that signed the members' certificates (empty:
// the system's roots).
func TLSFiles(certFile, keyFile, caFile string) (*tls.Config, error) {
	if (certFile == "") != (keyFile == "") {
		return nil, errors.New("etcd TLS: give both a client certificate and its key, or neither")
	}
	info := transport.TLSInfo{CertFile: certFile, KeyFile: keyFile, TrustedCAFile: caFile}
	if certFile == "" {
		// TLSInfo wants a certificate; with none, build the config by hand.
		cfg := &tls.Config{MinVersion: tls.VersionTLS12}
		if caFile != "" {
			pool, err := tlsutil.NewCertPool([]string{caFile})
			if err != nil {
				return nil, fmt.Errorf("etcd TLS: read CA file %s: %w", caFile, err)
			}
			cfg.RootCAs = pool
		}
		return cfg, nil
	}
	cfg, err := info.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("etcd TLS: %w", err)
	}
	return cfg, nil
}
