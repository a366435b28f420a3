package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/flowdhq/flowd/cmd/internal/metrics"
	"github.com/flowdhq/flowd/cmd/internal/server"
	"github.com/flowdhq/flowd/cmd/internal/wire"
	"github.com/flowdhq/flowd/engine"
)

// apiClients is how many clients call the API at once in item 6.
const apiClients = 8

// socketServer is flowd's API server on a unix socket, over an engine.
type socketServer struct {
	srv    *server.Server
	client *http.Client
	done   chan error
	dir    string
}

// unixClient returns a client whose every connection goes to the socket at path.
func unixClient(path string) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
		MaxIdleConnsPerHost: 2 * apiClients,
	}}
}

// socketDir makes a directory for a socket: short, since a socket path
// must stay under 108 bytes and -dir may be long.
func socketDir() (string, error) {
	d, err := os.MkdirTemp("", "fb")
	if err != nil {
		return "", fmt.Errorf("make a socket directory: %w", err)
	}
	return d, nil
}

// serveAPI serves flowd's API for e on a new unix socket, configured as
// the daemon configures it (with metrics).
func serveAPI(e *engine.Engine) (*socketServer, error) {
	srv, err := server.New(server.Config{Engine: e, Metrics: metrics.New(), Providers: []wire.Provider{{Name: providerName}}})
	if err != nil {
		return nil, fmt.Errorf("build flowd's API server: %w", err)
	}
	return serveOn(func(l net.Listener) error { return srv.ServeUnix(l) }, srv)
}

func serveOn(serve func(net.Listener) error, srv *server.Server) (*socketServer, error) {
	dir, err := socketDir()
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "s")
	l, err := net.Listen("unix", path)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	s := &socketServer{srv: srv, client: unixClient(path), done: make(chan error, 1), dir: dir}
	go func() { s.done <- serve(l) }()
	return s, nil
}

func (s *socketServer) close(stop func(context.Context) error) error {
	s.client.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := stop(ctx)
	if serr := <-s.done; err == nil {
		err = serr
	}
	_ = os.RemoveAll(s.dir)
	return err
}

// get fetches url over the socket and returns the body of a 200.
func (s *socketServer) get(ctx context.Context, url string) ([]byte, http.Header, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://flowd"+url, nil)
	if err != nil {
		return nil, nil, err
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, nil, fmt.Errorf("GET %s: %s: %s", url, resp.Status, bytes.TrimSpace(body))
	}
	return body, resp.Header, nil
}

// api measures item 6: GET /v1/flows/{state} of a live flow through
// flowd's server, against a bare net/http handler that writes the same
// bytes, each on its own unix socket, apiClients calls at a time, in
// alternating order per run.
func (b *Bench) api(ctx context.Context) ([]*Row, error) {
	row := &Row{Item: "6", Figure: "status calls over the unix socket", Unit: "/s",
		Baseline: "bare net/http handler, same bytes/s", Target: Target{AtLeast, 0.5},
		Note: fmt.Sprintf("6 runs %d clients in the same process as the servers, so both sides pay the same client cost", apiClients)}
	dir, done, err := b.tempDir()
	if err != nil {
		return nil, err
	}
	defer done()
	log, err := openLog(filepath.Join(dir, "flowd.db"), false)
	if err != nil {
		return nil, err
	}
	defer log.Close()
	e, err := engine.Open(ctx, engineConfig(log, nil))
	if err != nil {
		return nil, err
	}
	defer e.Close()
	st, err := e.Start(ctx, engine.StartRequest{Provider: providerName})
	if err != nil {
		return nil, err
	}
	flowd, err := serveAPI(e)
	if err != nil {
		return nil, err
	}
	defer flowd.close(flowd.srv.Shutdown)
	url := statusPath(st.ID)
	body, hdr, err := flowd.get(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("item 6: %w", err)
	}
	ct := hdr.Get("Content-Type")
	bare := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", ct)
		_, _ = w.Write(body)
	})}
	plain, err := serveOn(bare.Serve, nil)
	if err != nil {
		return nil, err
	}
	defer plain.close(bare.Shutdown)

	calls := func(s *socketServer) (float64, error) {
		begin := time.Now()
		err := fanOut(ctx, apiClients, b.Sizes.APICalls, func(ctx context.Context, _, _ int) error {
			got, _, err := s.get(ctx, url)
			if err == nil && len(got) != len(body) {
				err = fmt.Errorf("answer of %d bytes, want %d", len(got), len(body))
			}
			return err
		})
		return float64(b.Sizes.APICalls) / time.Since(begin).Seconds(), err
	}
	// Warm both: connections, the mux, the allocator.
	for _, s := range []*socketServer{flowd, plain} {
		if _, err := calls(s); err != nil {
			return nil, fmt.Errorf("item 6: warm-up: %w", err)
		}
	}
	for run := range b.Runs {
		var f, p float64
		if run%2 == 0 {
			f, err = calls(flowd)
			if err == nil {
				p, err = calls(plain)
			}
		} else {
			p, err = calls(plain)
			if err == nil {
				f, err = calls(flowd)
			}
		}
		if err != nil {
			return nil, fmt.Errorf("item 6, run %d: %w", run+1, err)
		}
		row.Add(f, p)
		b.logf("item 6 run %d/%d: flowd %.0f/s, bare handler %.0f/s", run+1, b.Runs, f, p)
	}
	return []*Row{row}, nil
}

// socketWaiter returns a Wait that long-polls over s.
func socketWaiter(s *socketServer) func(ctx context.Context, state string) error {
	return func(ctx context.Context, state string) error {
		body, _, err := s.get(ctx, statusPath(state)+"?wait=60s")
		if err != nil {
			return err
		}
		var f wire.Flow
		if err := json.Unmarshal(body, &f); err != nil {
			return fmt.Errorf("decode the flow: %w", err)
		}
		if f.Status != "complete" {
			return errors.New("long-poll returned flow " + f.Status + ", want complete")
		}
		return nil
	}
}

// statusPath is the API path of a flow's status.
func statusPath(state string) string {
	rt, _ := wire.RouteByName(wire.RouteStatus)
	return rt.Path(state)
}
