// Package client is flowctl's HTTP client for flowd's API, spoken over
// flowd's unix socket. It turns transport failures into *UnreachableError
// (flowctl exits 3 on it) and flowd's error shape into *APIError, so
// callers never parse bodies or inspect net errors themselves.
//
// The client never runs a flow: every method is one request to flowd.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"syscall"
	"time"

	"github.com/flowdhq/flowd/cmd/internal/wire"
)

// DefaultTimeout bounds a request that is not a long poll. flowd answers
// everything but a long poll at once; a daemon that takes longer is stuck.
const DefaultTimeout = 30 * time.Second

// pollSlack is added to a long poll's wait so the HTTP request outlives the
// daemon's own wait and the daemon, not the client, ends the poll.
const pollSlack = 15 * time.Second

// maxErrorBody bounds how much of an error response is read.
const maxErrorBody = 64 << 10

// Client talks to one flowd over its unix socket. It is safe for concurrent use.
type Client struct {
	socket string
	hc     *http.Client
}

// New returns a client for the flowd listening on socket.
func New(socket string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		// One daemon, one connection at a time is the common case; keep a
		// couple idle so a poll loop reuses its connection.
		MaxIdleConns:          2,
		IdleConnTimeout:       30 * time.Second,
		ResponseHeaderTimeout: 0, // long polls: bounded by the request context instead
	}
	return &Client{socket: socket, hc: &http.Client{Transport: tr}}
}

// Socket returns the socket path the client dials.
func (c *Client) Socket() string { return c.socket }

// Close releases idle connections.
func (c *Client) Close() { c.hc.CloseIdleConnections() }

// UnreachableError means flowd could not be reached on its socket: it is not
// running, the socket is stale, or the connection broke mid-request.
type UnreachableError struct {
	Socket string
	Err    error
}

func (e *UnreachableError) Error() string {
	why := reason(e.Err)
	if len(e.Socket) > maxSocketPath {
		// The kernel's answer ("invalid argument") does not say what is wrong.
		why = fmt.Sprintf("the path is %d bytes, longer than the %d a unix socket path may have", len(e.Socket), maxSocketPath)
	}
	return fmt.Sprintf("could not reach flowd at %s: %s. Is flowd running? Start it with: flowd", e.Socket, why)
}

// maxSocketPath is the longest unix socket path Linux accepts (sun_path is
// 108 bytes with its terminating NUL).
const maxSocketPath = 107

func (e *UnreachableError) Unwrap() error { return e.Err }

// reason reduces a transport error to what a user can act on: "no such file
// or directory", "connection refused", "permission denied", not the whole
// dial chain with a fake URL in it.
func reason(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno.Error()
	}
	var sys *os.SyscallError
	if errors.As(err, &sys) {
		return sys.Err.Error()
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return op.Err.Error()
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	return err.Error()
}

// APIError is flowd's answer to a request it refused: the HTTP status and
// the {"error": {"code", "message"}} body.
type APIError struct {
	Status  int
	Code    string
	Message string
}

func (e *APIError) Error() string {
	switch {
	case e.Message != "":
		return e.Message
	case e.Code != "":
		return fmt.Sprintf("flowd answered %d (%s)", e.Status, e.Code)
	}
	return fmt.Sprintf("flowd answered %d %s", e.Status, http.StatusText(e.Status))
}

// HasCode reports whether err is flowd's refusal with the given stable code
// (one of the wire.Code* constants).
func HasCode(err error, code string) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.Code == code
}

// IsNotFound reports whether err is flowd's 404: an unknown or pruned flow,
// or a provider with nothing stored.
func IsNotFound(err error) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.Status == http.StatusNotFound
}

// request describes one call.
type request struct {
	method string
	path   string
	query  url.Values
	body   any
	// wait is the long-poll wait the daemon was asked for; the request's
	// timeout is stretched past it.
	wait time.Duration
	// noTimeout leaves the request bounded by ctx alone (streamed bodies).
	noTimeout bool
}

func (c *Client) send(ctx context.Context, r request) (*http.Response, context.CancelFunc, error) {
	timeout := DefaultTimeout
	if r.wait > 0 {
		timeout = r.wait + pollSlack
	}
	var cancel context.CancelFunc
	if r.noTimeout {
		ctx, cancel = context.WithCancel(ctx)
	} else {
		ctx, cancel = context.WithTimeout(ctx, timeout)
	}
	// r.path is escaped (an MCP server URL as a provider is one segment,
	// its slashes %2F): keep it as it is, or it is escaped twice.
	u := url.URL{Scheme: "http", Host: "flowd", Path: r.path}
	if p, err := url.PathUnescape(r.path); err == nil && p != r.path {
		u.Path, u.RawPath = p, r.path
	}
	if len(r.query) > 0 {
		u.RawQuery = r.query.Encode()
	}
	var body io.Reader
	if r.body != nil {
		b, err := json.Marshal(r.body)
		if err != nil {
			cancel()
			return nil, nil, fmt.Errorf("encode %s %s request: %w", r.method, r.path, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, r.method, u.String(), body)
	if err != nil {
		cancel()
		return nil, nil, fmt.Errorf("build %s %s request: %w", r.method, r.path, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		ctxErr := context.Cause(ctx)
		cancel()
		// The caller's own cancellation (Ctrl+C) is not an unreachable daemon.
		if ctxErr != nil && !errors.Is(ctxErr, context.DeadlineExceeded) {
			return nil, nil, fmt.Errorf("%s %s: %w", r.method, r.path, ctxErr)
		}
		if ctxErr != nil {
			return nil, nil, &UnreachableError{Socket: c.socket, Err: fmt.Errorf("no answer within %s", timeout)}
		}
		return nil, nil, &UnreachableError{Socket: c.socket, Err: err}
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		defer cancel()
		return nil, nil, decodeError(resp)
	}
	return resp, cancel, nil
}

// call sends r and decodes a JSON answer into out (nil discards it).
func (c *Client) call(ctx context.Context, r request, out any) error {
	resp, cancel, err := c.send(ctx, r)
	if err != nil {
		return err
	}
	defer cancel()
	defer resp.Body.Close()
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return fmt.Errorf("%s %s: %w", r.method, r.path, ctxErr)
		}
		return fmt.Errorf("decode flowd's answer to %s %s: %w", r.method, r.path, err)
	}
	return nil
}

func decodeError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	var eb wire.Error
	if err := json.Unmarshal(b, &eb); err != nil || (eb.Err.Code == "" && eb.Err.Message == "") {
		// Not flowd's shape: something else answered on the socket, or a
		// proxy. Show a bounded excerpt rather than nothing.
		msg := string(bytes.TrimSpace(b))
		if len(msg) > 200 {
			msg = msg[:200] + "…"
		}
		return &APIError{Status: resp.StatusCode, Message: msg}
	}
	return &APIError{Status: resp.StatusCode, Code: eb.Err.Code, Message: eb.Err.Message}
}
