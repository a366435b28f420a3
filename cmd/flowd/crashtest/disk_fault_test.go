package crashtest

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowdhq/flowd/cmd/internal/wire"
)

// smallDisk mounts a tmpfs of size bytes and returns its path, or skips
// the test when mounting is not possible (not root, no CAP_SYS_ADMIN).
func smallDisk(t *testing.T, size string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("a full disk is simulated with a small tmpfs, and mounting one needs root")
	}
	dir, err := os.MkdirTemp("", "fdfull")
	require.NoError(t, err)
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size+",mode=0700", "tmpfs", dir).CombinedOutput()
	if err != nil {
		os.Remove(dir)
		t.Skipf("cannot mount a tmpfs to fill (%v: %s); the full-disk test needs it", err, strings.TrimSpace(string(out)))
	}
	t.Cleanup(func() {
		_ = exec.Command("umount", "-l", dir).Run()
		os.Remove(dir)
	})
	return dir
}

// fill writes a file until the disk is full.
func fill(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	require.NoError(t, err)
	defer f.Close()
	chunk := make([]byte, 16<<10)
	for {
		if _, err := f.Write(chunk); err != nil {
			require.True(t, errors.Is(err, syscall.ENOSPC), "filling the disk: %v", err)
			break
		}
	}
	for _, n := range []int{4096, 512, 64, 1} { // the last pages too
		for {
			if _, err := f.Write(chunk[:n]); err != nil {
				break
			}
		}
	}
}

// TestFullDisk: with the state directory's disk full, appends fail: the
// caller gets a clear error and no flow advances or appears, flowd keeps
// serving reads, nothing acknowledged is lost (not even across a SIGKILL),
// no code is redeemed twice, and flowd works again once space is freed.
func TestFullDisk(t *testing.T) {
	disk := smallDisk(t, "4m")
	prov := newProvider(t, 0)
	r := newRig(t, prov, rigOptions{stateDir: filepath.Join(disk, "state"), ttl: "10m"})
	r.start()

	var acked []string
	startOne := func() reply {
		rp, err := r.call("POST", "/v1/flows", wire.StartRequest{Provider: "fake", Account: randHex(8)})
		require.NoError(t, err, "flowd answers even when its disk is full")
		if rp.status == 201 {
			var st wire.StartResponse
			require.NoError(t, json.Unmarshal(rp.body, &st))
			acked = append(acked, st.State)
		}
		return rp
	}
	for range 5 {
		require.Equal(t, 201, startOne().status)
	}
	fill(t, filepath.Join(disk, "filler"))

	// bbolt reuses freed pages, so a few appends may still fit.
	var refused reply
	for range 3000 {
		if rp := startOne(); rp.status != 201 {
			refused = rp
			break
		}
	}
	require.NotZero(t, refused.status, "no append failed on a full disk")
	t.Logf("a start on a full disk, after %d that fitted: %d %s", len(acked)-5, refused.status, refused.body)
	assert.Equal(t, 507, refused.status, "a full disk is Insufficient Storage, the server's problem, not the client's")
	assert.Equal(t, "storage_full", refused.errCode())
	assert.Contains(t, refused.errMessage(), "flowd's store is full, so nothing was changed", "the caller is told why and what to do")

	assert.Contains(t, refused.errMessage(), "free space on the disk holding the state directory", "and what to do")
	// A callback on an acknowledged flow: it may fit or not, but a refused
	// one leaves the flow where it was and spends no code.
	code := "c-" + randHex(16)
	rp, err := r.call("POST", "/v1/callbacks", wire.CallbackRequest{State: acked[0], Code: code})
	require.NoError(t, err)
	t.Logf("a callback on a full disk: %d %s", rp.status, tail(string(rp.body), 300))

	// Reads keep working.
	for _, path := range []string{"/v1/health", "/v1/flows", "/v1/flows/" + acked[1], "/v1/flows/" + acked[1] + "/history"} {
		rp, err := r.call("GET", path, nil)
		require.NoError(t, err)
		assert.Equal(t, 200, rp.status, "GET %s on a full disk: %s", path, rp.body)
	}
	var l wire.ListResponse
	rp, err = r.call("GET", "/v1/flows", nil)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(rp.body, &l))
	assert.Len(t, l.Flows, len(acked), "every acknowledged start is listed, and no refused one")

	// Nothing acknowledged is lost, even if flowd dies now.
	r.kill()
	require.NoError(t, os.Remove(filepath.Join(disk, "filler")))
	r.start()
	rp, err = r.call("GET", "/v1/flows", nil)
	require.NoError(t, err)
	l = wire.ListResponse{}
	require.NoError(t, json.Unmarshal(rp.body, &l))
	got := map[string]string{}
	for _, f := range l.Flows {
		got[f.State] = f.Status
	}
	for _, id := range acked {
		assert.Contains(t, got, id, "acknowledged flow lost")
	}
	assert.Len(t, got, len(acked))

	// With space again, flowd works: a fresh callback completes a flow.
	rp, err = r.call("POST", "/v1/callbacks", wire.CallbackRequest{State: acked[2], Code: "c-" + randHex(16)})
	require.NoError(t, err)
	require.Equal(t, 200, rp.status, "%s", rp.body)
	var cr wire.CallbackResponse
	require.NoError(t, json.Unmarshal(rp.body, &cr))
	assert.Equal(t, "complete", cr.Flow.Status)
	twice, ex := prov.Reused()
	assert.Zero(t, twice, "codes redeemed twice: %v", ex)
	require.NoError(t, r.stop())
}
