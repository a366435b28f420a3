// Package etcdtest starts real etcd clusters inside a test process with
// go.etcd.io/etcd/server/v3/embed: every member on 127.0.0.1 with ports
// the kernel handed out, and data in the test's temporary directory. It
// lets tests stop and restart members (the leader too) to exercise what a
// deployment sees when a member dies or quorum is lost.
//
// Only tests import it; embedding flowd's engine never pulls in an etcd
// server.
package etcdtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Options tunes a cluster. The zero value is a durable cluster with
// elections fast enough for tests.
type Options struct {
	// TickMs and ElectionMs are the raft heartbeat and election timeout.
	// Default 50 and 500: fast failover, yet tolerant of a loaded 2-core
	// machine under -race, where a shorter timeout makes leaders flap.
	TickMs, ElectionMs uint
	// NoFsync skips fsync in the members' WAL and backend. Only for tests
	// that measure nothing about durability.
	NoFsync bool
	// MaxTxnOps is the server's cap on operations in one transaction.
	// Default etcd's own (128), as in a real deployment.
	MaxTxnOps uint
}

// Cluster is a running embedded etcd cluster.
type Cluster struct {
	t       testing.TB
	opts    Options
	mu      sync.Mutex
	members []*Member
}

// Member is one etcd member of a Cluster.
type Member struct {
	// Name is the member's name (m0, m1, ...).
	Name string
	// ClientURL is where clients reach it.
	ClientURL string
	dir       string
	peerURL   string
	initial   string
	token     string
	etcd      *embed.Etcd
}

// Start starts an n-member cluster and waits until it serves. It stops the
// cluster when the test ends.
func Start(t testing.TB, n int, opts Options) *Cluster {
	t.Helper()
	if opts.TickMs == 0 {
		opts.TickMs = 50
	}
	if opts.ElectionMs == 0 {
		opts.ElectionMs = 500
	}
	c := &Cluster{t: t, opts: opts}
	var err error
	// Ports are drawn by listening on :0 and closing again, so another
	// process may take one in between: try again with fresh ports.
	for attempt := 0; attempt < 3; attempt++ {
		if err = c.start(n, attempt); err == nil {
			t.Cleanup(c.Close)
			return c
		}
		c.Close()
	}
	t.Fatalf("etcdtest: start a %d-member cluster: %v", n, err)
	return nil
}

func (c *Cluster) start(n, attempt int) error {
	ports, err := freePorts(2 * n)
	if err != nil {
		return err
	}
	base := c.t.TempDir()
	token := fmt.Sprintf("flowd-test-%d", attempt)
	var initial []string
	c.members = nil
	for i := 0; i < n; i++ {
		m := &Member{
			Name:      fmt.Sprintf("m%d", i),
			ClientURL: fmt.Sprintf("http://127.0.0.1:%d", ports[2*i]),
			peerURL:   fmt.Sprintf("http://127.0.0.1:%d", ports[2*i+1]),
			dir:       fmt.Sprintf("%s/%d-m%d", base, attempt, i),
			token:     token,
		}
		initial = append(initial, m.Name+"="+m.peerURL)
		c.members = append(c.members, m)
	}
	for _, m := range c.members {
		m.initial = strings.Join(initial, ",")
	}
	// Every member must be started before any can elect a leader, so
	// start them all, then wait for each.
	for _, m := range c.members {
		if err := c.launch(m, "new"); err != nil {
			return err
		}
	}
	for _, m := range c.members {
		if err := c.ready(m); err != nil {
			return err
		}
	}
	return nil
}

func (c *Cluster) config(m *Member, state string) (*embed.Config, error) {
	cfg := embed.NewConfig()
	cfg.Name = m.Name
	cfg.Dir = m.dir
	cu, err := url.Parse(m.ClientURL)
	if err != nil {
		return nil, err
	}
	pu, err := url.Parse(m.peerURL)
	if err != nil {
		return nil, err
	}
	cfg.ListenClientUrls = []url.URL{*cu}
	cfg.AdvertiseClientUrls = []url.URL{*cu}
	cfg.ListenPeerUrls = []url.URL{*pu}
	cfg.AdvertisePeerUrls = []url.URL{*pu}
	cfg.InitialCluster = m.initial
	cfg.InitialClusterToken = m.token
	cfg.ClusterState = state
	cfg.TickMs = c.opts.TickMs
	cfg.ElectionMs = c.opts.ElectionMs
	cfg.UnsafeNoFsync = c.opts.NoFsync
	if c.opts.MaxTxnOps > 0 {
		cfg.MaxTxnOps = c.opts.MaxTxnOps
	}
	cfg.Logger = "zap"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	cfg.Metrics = "basic"
	return cfg, nil
}

func (c *Cluster) launch(m *Member, state string) error {
	cfg, err := c.config(m, state)
	if err != nil {
		return fmt.Errorf("etcdtest: configure %s: %w", m.Name, err)
	}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return fmt.Errorf("etcdtest: start %s: %w", m.Name, err)
	}
	c.mu.Lock()
	m.etcd = e
	c.mu.Unlock()
	return nil
}

// readyTimeout bounds how long a member may take to join and serve.
const readyTimeout = 30 * time.Second

func (c *Cluster) ready(m *Member) error {
	c.mu.Lock()
	e := m.etcd
	c.mu.Unlock()
	select {
	case <-e.Server.ReadyNotify():
		return nil
	case err := <-e.Err():
		return fmt.Errorf("etcdtest: %s failed: %w", m.Name, err)
	case <-time.After(readyTimeout):
		return fmt.Errorf("etcdtest: %s not ready within %s", m.Name, readyTimeout)
	}
}

// Endpoints returns every member's client URL, running or not.
func (c *Cluster) Endpoints() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, len(c.members))
	for i, m := range c.members {
		out[i] = m.ClientURL
	}
	return out
}

// Len is the number of members.
func (c *Cluster) Len() int { return len(c.members) }

// Stop stops member i, the leader or not, as a crash would, and keeps its
// data for Restart.
func (c *Cluster) Stop(i int) {
	c.t.Helper()
	c.mu.Lock()
	m := c.members[i]
	e := m.etcd
	m.etcd = nil
	c.mu.Unlock()
	if e == nil {
		c.t.Fatalf("etcdtest: stop %s: not running", m.Name)
	}
	stop(e)
}

// stop stops a member abruptly, as a crash would, but keeps its data
// intact: raft stops first, without handing leadership over (a graceful
// stop would transfer it first, the gentler case), then the listeners
// close. It also keeps Close from waiting out the members' request timeout
// for streams of clients still connected.
func stop(e *embed.Etcd) {
	e.Server.HardStop()
	e.Close()
}

// Restart starts a stopped member i again on its data and ports, and
// waits until it serves (which needs a quorum of running members).
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	m := c.members[i]
	if err := c.launch(m, "existing"); err != nil {
		c.t.Fatal(err)
	}
	if err := c.ready(m); err != nil {
		c.t.Fatal(err)
	}
}

// RestartAsync starts a stopped member i again without waiting for it to
// serve: when quorum is lost, no member serves until enough of them run.
func (c *Cluster) RestartAsync(i int) {
	c.t.Helper()
	if err := c.launch(c.members[i], "existing"); err != nil {
		c.t.Fatal(err)
	}
}

// WaitReady waits until member i serves.
func (c *Cluster) WaitReady(i int) {
	c.t.Helper()
	if err := c.ready(c.members[i]); err != nil {
		c.t.Fatal(err)
	}
}

// Leader returns the index of the member that is leader now, waiting up
// to a few election timeouts for one to be elected.
func (c *Cluster) Leader() int {
	c.t.Helper()
	deadline := time.Now().Add(20 * time.Duration(c.opts.ElectionMs) * time.Millisecond)
	for time.Now().Before(deadline) {
		c.mu.Lock()
		for i, m := range c.members {
			if m.etcd == nil {
				continue
			}
			if lead := uint64(m.etcd.Server.Leader()); lead != 0 && lead == uint64(m.etcd.Server.MemberID()) {
				c.mu.Unlock()
				return i
			}
		}
		c.mu.Unlock()
		time.Sleep(10 * time.Millisecond)
	}
	c.t.Fatalf("etcdtest: no leader elected")
	return -1
}

// Running reports whether member i runs.
func (c *Cluster) Running(i int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.members[i].etcd != nil
}

// Close stops every running member.
func (c *Cluster) Close() {
	c.mu.Lock()
	var es []*embed.Etcd
	for _, m := range c.members {
		if m.etcd != nil {
			es = append(es, m.etcd)
			m.etcd = nil
		}
	}
	c.mu.Unlock()
	var wg sync.WaitGroup
	for _, e := range es {
		wg.Go(func() { stop(e) })
	}
	wg.Wait()
}

// WaitServing waits until a linearizable request through member i's
// endpoint succeeds, that is until a quorum serves again.
func (c *Cluster) WaitServing(ctx context.Context, i int) error {
	c.mu.Lock()
	e := c.members[i].etcd
	c.mu.Unlock()
	if e == nil {
		return errors.New("etcdtest: member is stopped")
	}
	for {
		if lead := e.Server.Leader(); lead != 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// freePorts returns n distinct TCP ports on 127.0.0.1 that were free a
// moment ago.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	out := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("etcdtest: find a free port: %w", err)
		}
		ls = append(ls, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	return out, nil
}
