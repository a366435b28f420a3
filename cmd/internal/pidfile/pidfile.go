// Package pidfile records which flowd runs on a state directory: its
// process id and socket, in flowd.pid beside the database. A second flowd
// that finds the database locked reads it to say which process holds the
// lock and where to reach it, instead of only "database is locked".
//
// The file is a hint, not the lock: the database's flock is. A file left
// by a flowd that was killed names a process that is gone, and Read says so.
package pidfile

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Name is the file's name in the state directory.
const Name = "flowd.pid"

// Running is what a flowd recorded about itself.
type Running struct {
	PID    int
	Socket string
	// Alive is false when no process has PID any more (killed flowd).
	Alive bool
}

// Write records pid and socket in dir, 0600, replacing any earlier file.
// It writes a temporary file and renames it, so a reader never sees half.
func Write(dir string, pid int, socket string) error {
	path := filepath.Join(dir, Name)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(fmt.Sprintf("%d\n%s\n", pid, socket)), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// Remove deletes the file in dir if it still names pid (a newer flowd
// may have replaced it).
func Remove(dir string, pid int) {
	if r, err := Read(dir); err == nil && r.PID == pid {
		_ = os.Remove(filepath.Join(dir, Name))
	}
}

// Read returns what the file in dir records. An error wraps
// fs.ErrNotExist when there is none.
func Read(dir string) (Running, error) {
	b, err := os.ReadFile(filepath.Join(dir, Name))
	if err != nil {
		return Running{}, err
	}
	pidLine, socket, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(pidLine))
	if err != nil || pid <= 0 {
		return Running{}, fmt.Errorf("%s: no process id in it", filepath.Join(dir, Name))
	}
	r := Running{PID: pid, Socket: strings.TrimSpace(socket)}
	// Signal 0 checks the process exists; EPERM means it does, as
	// another user's.
	err = syscall.Kill(pid, 0)
	r.Alive = err == nil || errors.Is(err, syscall.EPERM)
	return r, nil
}
