//go:build !linux

package server

import (
	"errors"
	"net"
)

// peerUID is not implemented off Linux: every socket peer is then a
// Stranger, so flowd fails closed rather than trusting the socket's mode.
func peerUID(net.Conn) (int, error) {
	return -1, errors.New("peer credentials are only read on Linux")
}
