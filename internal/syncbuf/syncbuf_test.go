package syncbuf_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/flowdhq/flowd/internal/syncbuf"
)

// Writers on many goroutines and a reader at the same time: every line
// arrives whole (run with -race to see the point of the mutex).
func TestConcurrentWritesAndReads(t *testing.T) {
	var b syncbuf.Buffer
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for j := range 100 {
				fmt.Fprintf(&b, "w%d-%d\n", i, j)
			}
		})
	}
	wg.Go(func() {
		for range 100 {
			_ = b.String()
		}
	})
	wg.Wait()
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	assert.Len(t, lines, 800)
	assert.Contains(t, lines, "w7-99")
}

func TestReset(t *testing.T) {
	var b syncbuf.Buffer
	_, _ = b.Write([]byte("before"))
	b.Reset()
	_, _ = b.Write([]byte("after"))
	assert.Equal(t, "after", b.String())
}
