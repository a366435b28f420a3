// Package seal encrypts secrets at rest for flowd's logs: AES-256-GCM under
// a 32-byte key kept in a file of its own, beside the database, readable
// only by its owner.
//
// It is separate from the bbolt log so that another backend (etcd, say) can
// seal its secrets the same way and read the same key file.
//
// A sealed value is one format byte (1), a random 12-byte nonce, then the
// ciphertext with its 16-byte tag. The secret's name is the additional
// data, so a sealed value moved under another name does not open. Random
// nonces stay safe for about 2^32 seals under one key, far more secrets
// than one flowd writes.
package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// KeySize is the length of a key file in bytes: an AES-256 key.
const KeySize = 32

// format is the first byte of every sealed value; a later key rotation or
// cipher change gets a new one.
const format = 1

const nonceSize = 12

// Errors about key files and sealed values. They are wrapped with the path
// or the secret's name and what to do.
var (
	// ErrKeyMissing: the key file does not exist.
	ErrKeyMissing = errors.New("key file missing")
	// ErrKeySize: the key file is not KeySize bytes long.
	ErrKeySize = errors.New("key file has the wrong size")
	// ErrKeyMode: group or others may access the key file.
	ErrKeyMode = errors.New("key file is accessible by group or others")
	// ErrOpen: a sealed value does not open under this key and name: the
	// key file was replaced, or the value was damaged or moved.
	ErrOpen = errors.New("sealed value does not open with this key")
)

// Sealer seals and opens secrets under one key. It is safe for concurrent use.
type Sealer struct {
	aead cipher.AEAD
	rand io.Reader
}

// New returns a Sealer for a KeySize-byte key.
func New(key []byte) (*Sealer, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("seal: key is %d bytes, want %d: %w", len(key), KeySize, ErrKeySize)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("seal: new cipher: %w", err)
	}
	aead, err := cipher.NewGCMWithNonceSize(block, nonceSize)
	if err != nil {
		return nil, fmt.Errorf("seal: new gcm: %w", err)
	}
	return &Sealer{aead: aead, rand: rand.Reader}, nil
}

// Seal encrypts plaintext under name. The result opens only with Open and
// the same name.
func (s *Sealer) Seal(name string, plaintext []byte) ([]byte, error) {
	out := make([]byte, 1+nonceSize, 1+nonceSize+len(plaintext)+s.aead.Overhead())
	out[0] = format
	if _, err := io.ReadFull(s.rand, out[1:]); err != nil {
		return nil, fmt.Errorf("seal %q: draw nonce: %w", name, err)
	}
	return s.aead.Seal(out, out[1:1+nonceSize], plaintext, []byte(name)), nil
}

// Open decrypts a value Seal returned for name. A value that was damaged,
// sealed under another key or under another name fails with ErrOpen.
func (s *Sealer) Open(name string, sealed []byte) ([]byte, error) {
	if len(sealed) < 1+nonceSize+s.aead.Overhead() || sealed[0] != format {
		return nil, fmt.Errorf("open sealed %q: not a sealed value (format or length): %w", name, ErrOpen)
	}
	pt, err := s.aead.Open(nil, sealed[1:1+nonceSize], sealed[1+nonceSize:], []byte(name))
	if err != nil {
		return nil, fmt.Errorf("open sealed %q: %w (was the key file replaced?)", name, ErrOpen)
	}
	if pt == nil {
		pt = []byte{}
	}
	return pt, nil
}

// LoadKey reads a key file, refusing one that is missing, of the wrong
// size, or accessible by group or others.
func LoadKey(path string) ([]byte, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("key file %s: %w", path, ErrKeyMissing)
	}
	if err != nil {
		return nil, fmt.Errorf("read key file: %w", err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("read key file: %w", err)
	}
	if !info.Mode().IsRegular() {
		return nil, fmt.Errorf("key file %s is not a regular file: %w", path, ErrKeySize)
	}
	if perm := info.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("key file %s has mode %04o: %w; run: chmod 600 %s", path, perm, ErrKeyMode, path)
	}
	if info.Size() != KeySize {
		return nil, fmt.Errorf("key file %s is %d bytes, want %d: %w; restore the original key file (secrets sealed under another key cannot be read)", path, info.Size(), KeySize, ErrKeySize)
	}
	key := make([]byte, KeySize)
	if _, err := io.ReadFull(f, key); err != nil {
		return nil, fmt.Errorf("read key file %s: %w", path, err)
	}
	return key, nil
}

// CreateKey draws a new key and writes it to path, mode 0600. It never
// replaces an existing file, and the key is on disk (file and directory
// synced) before it returns: a key that vanished in a crash would make
// every secret sealed under it unreadable.
func CreateKey(path string) ([]byte, error) {
	key := make([]byte, KeySize)
	if _, err := io.ReadFull(rand.Reader, key); err != nil {
		return nil, fmt.Errorf("create key file %s: draw key: %w", path, err)
	}
	// Write a temporary file and link it into place: a crash never leaves
	// a short key file at path, and link fails if path exists.
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, filepath.Base(path)+".tmp*")
	if err != nil {
		return nil, fmt.Errorf("create key file %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("create key file %s: %w", path, err)
	}
	if _, err := tmp.Write(key); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("create key file %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("create key file %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("create key file %s: %w", path, err)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		return nil, fmt.Errorf("create key file: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		err = d.Sync()
		d.Close()
		if err != nil {
			return nil, fmt.Errorf("create key file %s: sync directory: %w", path, err)
		}
	}
	return key, nil
}
