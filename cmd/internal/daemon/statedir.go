package daemon

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// prepareStateDir creates the state directory 0700, or checks an existing
// one and the files in it are private to flowd's user.
func prepareStateDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create state directory %s: %w", dir, err)
	}
	return checkPrivate(dir)
}

// checkPrivate refuses a state directory, or a regular file in it (the
// database, its key, the service token), that group or others can access.
func checkPrivate(dir string) error {
	info, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	if !info.IsDir() {
		return fmt.Errorf("state directory %s is not a directory; point -state-dir elsewhere", dir)
	}
	if perm := info.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("state directory %s has mode %04o: group or others can reach flowd's database and keys; run: chmod 700 %s", dir, perm, dir)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("read state directory %s: %w", dir, err)
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue // removed meanwhile
		}
		if perm := fi.Mode().Perm(); perm&0o077 != 0 {
			p := filepath.Join(dir, e.Name())
			return fmt.Errorf("%s has mode %04o: group or others can read it; run: chmod 600 %s", p, perm, p)
		}
	}
	return nil
}

// serviceToken reads the gateway's token, creating it (0600, random) when
// it is the default file and missing.
func serviceToken(path string, create bool) (string, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) && create {
		return createServiceToken(path)
	}
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("service token file %s (service_token_file in the config) does not exist; create it with: (umask 077; head -c 32 /dev/urandom | base64 > %s)", path, path)
	}
	if err != nil {
		return "", fmt.Errorf("read service token file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("read service token file %s: %w", path, err)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return "", fmt.Errorf("service token file %s has mode %04o: group or others can read it; run: chmod 600 %s", path, perm, path)
	}
	b, err := io.ReadAll(io.LimitReader(f, 4096))
	if err != nil {
		return "", fmt.Errorf("read service token file %s: %w", path, err)
	}
	tok := strings.TrimSpace(string(b))
	if len(tok) < minServiceToken {
		return "", fmt.Errorf("service token in %s is shorter than %d characters; replace it with: (umask 077; head -c 32 /dev/urandom | base64 > %s)", path, minServiceToken, path)
	}
	return tok, nil
}

func createServiceToken(path string) (string, error) {
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", fmt.Errorf("create service token: %w", err)
	}
	tok := base64.RawURLEncoding.EncodeToString(raw)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("create service token file: %w", err)
	}
	if _, err := f.WriteString(tok + "\n"); err != nil {
		f.Close()
		os.Remove(path)
		return "", fmt.Errorf("write service token file %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return "", fmt.Errorf("write service token file %s: %w", path, err)
	}
	return tok, nil
}
