package daemon

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"reflect"
	"slices"

	"github.com/flowdhq/flowd/cmd/internal/config"
	"github.com/flowdhq/flowd/cmd/internal/wire"
	"github.com/flowdhq/flowd/engine"
)

// Reload reads the config file again and applies its providers while
// flows run (SIGHUP, POST /v1/reload). The file is checked whole first: an
// invalid one returns its *config.Error (file, field, reason) and changes
// nothing. OIDC issuers are discovered as at start-up: one that does not
// answer leaves out only its own provider (Unavailable), retried in the
// background. Settings that take effect only at start-up (listen, socket,
// state directory, ...) are reported in RestartNeeded (compared with the
// config flowd started with) and keep their running values.
func (d *Daemon) Reload(ctx context.Context) (wire.ReloadResponse, error) {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	if d.closed {
		return wire.ReloadResponse{}, fmt.Errorf("reload: %w", engine.ErrClosed)
	}
	refuse := func(err error) (wire.ReloadResponse, error) {
		d.log.Warn("config reload refused; the running config stays", "file", d.cfgPath, "err", err)
		return wire.ReloadResponse{}, err
	}
	cfg, err := config.Load(d.cfgPath, d.cfgMissingOK, d.opts.Getenv)
	if err != nil {
		return refuse(err)
	}
	disc := newDiscovery(d.opts.DiscoveryClient, d.opts.DiscoveryBackoff, d.opts.DiscoveryClock, d.log.With("component", "discovery"))
	unavailable := disc.resolve(ctx, cfg, cmp.Or(d.opts.DiscoveryTimeout, StartupDiscoveryTimeout))
	if ctx.Err() != nil {
		disc.Close()
		return refuse(fmt.Errorf("reload interrupted during OIDC discovery: %w", ctx.Err()))
	}
	// The old config's retries stop before the swap: one finishing after
	// it would add back a provider the new file removed.
	d.discovery.Close()
	if err := d.Engine.SetProviders(availableProviders(cfg, unavailable)); err != nil {
		d.discovery = d.discovery.resumed()
		d.Server.SetProviders(WireProviders(d.Config.Providers), d.cfgPath, d.Config.File != "", d.discovery)
		d.discovery.start(d.Engine)
		disc.Close()
		return refuse(fmt.Errorf("reload %s: %w", d.cfgPath, err))
	}
	d.discovery = disc
	d.Server.SetProviders(WireProviders(cfg.Providers), d.cfgPath, cfg.File != "", disc)
	disc.start(d.Engine)

	old := d.Config
	d.Config = cfg
	if d.identifyClient != nil || d.identify.Load() != nil {
		d.setIdentify(cfg)
	}
	resp := wire.ReloadResponse{ConfigFile: d.cfgPath, ConfigFileFound: cfg.File != "", Providers: []string{}, Unavailable: unavailable}
	before := map[string]config.Provider{}
	for _, p := range old.Providers {
		before[p.Name] = p
	}
	for _, p := range cfg.Providers {
		resp.Providers = append(resp.Providers, p.Name)
		if was, ok := before[p.Name]; !ok {
			resp.Added = append(resp.Added, p.Name)
		} else if !reflect.DeepEqual(was, p) {
			resp.Changed = append(resp.Changed, p.Name)
		}
		delete(before, p.Name)
	}
	resp.Removed = slices.Sorted(maps.Keys(before))
	boot := d.bootConfig
	for _, s := range []struct {
		name     string
		was, now any
	}{
		{"listen", boot.Listen, cfg.Listen}, {"public_base_url", boot.PublicBaseURL, cfg.PublicBaseURL},
		{"ttl", boot.TTL, cfg.TTL}, {"retention", boot.Retention, cfg.Retention},
		{"service_token_file", boot.ServiceTokenFile, cfg.ServiceTokenFile},
		{"state_dir", boot.StateDir, cfg.StateDir}, {"socket", boot.Socket, cfg.Socket},
		{"store", boot.Store, cfg.Store}, {"etcd", boot.Etcd, cfg.Etcd},
	} {
		if !reflect.DeepEqual(s.was, s.now) {
			resp.RestartNeeded = append(resp.RestartNeeded, s.name)
		}
	}
	d.log.Info("config reloaded", "file", d.cfgPath, "providers", len(resp.Providers),
		"added", resp.Added, "removed", resp.Removed, "changed", resp.Changed, "unavailable", resp.Unavailable)
	if len(resp.RestartNeeded) > 0 {
		d.log.Warn("config settings changed that apply only when flowd starts; restart flowd to apply them", "settings", resp.RestartNeeded)
	}
	return resp, nil
}

// resumed is a new discovery that goes on retrying what d had pending,
// for a reload that was refused after d was stopped.
func (d *discovery) resumed() *discovery {
	n := newDiscovery(d.client, d.backoff, d.clock, d.log)
	d.mu.Lock()
	defer d.mu.Unlock()
	for name, p := range d.pending {
		cp := *p
		n.pending[name] = &cp
	}
	maps.Copy(n.found, d.found)
	return n
}
