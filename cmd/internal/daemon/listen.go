package daemon

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// redirectHost keeps the host as configured ("localhost" stays localhost,
// since that is what is registered at the provider) with the port actually
// bound (which differs only for port 0, in tests).
func redirectHost(configured, bound string) string {
	host, _, err := net.SplitHostPort(configured)
	_, port, err2 := net.SplitHostPort(bound)
	if err != nil || err2 != nil || host == "" {
		return bound
	}
	return net.JoinHostPort(host, port)
}

// listenTCP binds the loopback listener: loopback addresses only.
func listenTCP(addr string) (net.Listener, error) {
	// The config file's listen is checked on load; a flag or FLOWD_LISTEN here.
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("listen address %q is not host:port (e.g. 127.0.0.1:8085)", addr)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return nil, fmt.Errorf("listen address %q is not a loopback address; flowd's listener must stay on this machine (use 127.0.0.1 or ::1)", addr)
	}
	l, err := net.Listen("tcp", addr)
	if err == nil {
		return l, nil
	}
	_, port, _ := net.SplitHostPort(addr)
	if errors.Is(err, syscall.EADDRINUSE) {
		return nil, fmt.Errorf("loopback port %s (%s) is already in use by another process; stop it (see: ss -ltnp 'sport = :%s'), or set listen in the config or -listen to another address", port, addr, port)
	}
	return nil, fmt.Errorf("listen on %s: %w; set listen in the config or -listen", addr, err)
}

// listenUnix binds the API socket, mode 0600. A live socket means another
// flowd; a dead one is left over from a crash and is replaced.
func listenUnix(path string) (net.Listener, error) {
	if len(path) > 107 {
		return nil, fmt.Errorf("socket path %s is %d bytes, over the 107 a unix socket allows; use a shorter -socket", path, len(path))
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create socket directory: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("%s exists and is not a socket; remove it or choose another -socket", path)
		}
		c, err := net.DialTimeout("unix", path, time.Second)
		if err == nil {
			c.Close()
			return nil, fmt.Errorf("another flowd is already serving on socket %s; stop it, or give this one another -socket and -state-dir", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale socket %s: %w", path, err)
		}
	}
	// umask, not a chmod after bind: there is no moment at which the
	// socket is open to others.
	old := unix.Umask(0o077)
	l, err := net.Listen("unix", path)
	unix.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("listen on socket %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("chmod socket %s: %w", path, err)
	}
	return l, nil
}
