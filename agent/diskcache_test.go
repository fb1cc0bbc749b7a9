package agent

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"

	"github.com/lanyard-id/lanyard/ca/catest"
	"github.com/lanyard-id/lanyard/internal/clocktest"
)

// writeTestCache runs a manager with a cache file until it holds SVIDs for
// ws, stops it and returns the file's path and the SVIDs' serials.
func writeTestCache(t *testing.T, c *catest.CA, ws ...Workload) (string, []string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "state", "svids.json")
	m, err := NewManager(ManagerConfig{Signer: newFakeSigner(c, testTokens), TrustDomain: testTD, TTL: time.Hour, CacheFile: path})
	require.NoError(t, err)
	m.SetBundle(c.Bundle())
	stop := startManager(t, m)
	var serials []string
	for _, w := range ws {
		sub, err := m.Subscribe(context.Background(), w)
		require.NoError(t, err)
		serials = append(serials, serialOf(waitSVID(t, sub, nil, 5*time.Second)))
		sub.Close()
	}
	stop()
	body, err := readCache(path, testTD)
	require.NoError(t, err)
	require.Equal(t, len(ws), len(body.Entries), "every SVID is on disk once the manager stops")
	return path, serials
}

func TestDiskCachePersistsPrivately(t *testing.T) {
	c := newTestCA(t, nil, nil)
	path, _ := writeTestCache(t, c, attestedWorkload("shop", "api"), tokenWorkload("token-web-1", "shop", "web"))

	fi, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	di, err := os.Stat(filepath.Dir(path))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o700), di.Mode().Perm())
	left, err := filepath.Glob(filepath.Join(filepath.Dir(path), ".svid-cache*"))
	require.NoError(t, err)
	require.Empty(t, left, "no temporary files are left behind")

	body, err := readCache(path, testTD)
	require.NoError(t, err)
	require.Equal(t, 2, len(body.Entries))
	raw, err := json.Marshal(body)
	require.NoError(t, err)
	require.NotContains(t, string(raw), "token-web-1", "tokens are never stored")
}

func TestDiskCacheServesAtOnceDuringOutage(t *testing.T) {
	c := newTestCA(t, nil, nil)
	api, web := attestedWorkload("shop", "api"), tokenWorkload("token-web-1", "shop", "web")
	path, serials := writeTestCache(t, c, api, web)

	// The agent restarts while the CA is down.
	down := newFakeSigner(c, testTokens)
	down.failRPC(codes.Unavailable)
	logger, logs := newTestLogger()
	m, err := NewManager(ManagerConfig{Signer: down, TrustDomain: testTD, TTL: time.Hour, CacheFile: path, Logger: logger})
	require.NoError(t, err)
	require.Contains(t, logs.String(), "SVID cache loaded")

	// Served at once: before Run, before any call to the CA.
	for i, w := range []Workload{api, web} {
		sub, err := m.Subscribe(context.Background(), w)
		require.NoError(t, err)
		defer sub.Close()
		s, err := sub.SVID()
		require.NoError(t, err)
		require.NotNil(t, s, "workload %d not served from the cache", i)
		require.Equal(t, serials[i], serialOf(s))
		requireValidSVID(t, s, w.ID, sub.Bundles(), time.Now())
	}
	// Another token for the same ID is not the cached credential.
	other, err := m.Subscribe(context.Background(), tokenWorkload("token-web-2", "shop", "web"))
	require.NoError(t, err)
	defer other.Close()
	s, err := other.SVID()
	require.NoError(t, err)
	require.Nil(t, s, "a cached token SVID is served to that token only")

	startManager(t, m)
	require.Eventually(t, func() bool { return down.numCalls() > 0 }, 5*time.Second, 5*time.Millisecond)
	sub, err := m.Subscribe(context.Background(), web)
	require.NoError(t, err)
	defer sub.Close()
	s, err = sub.SVID()
	require.NoError(t, err)
	require.Equal(t, serials[1], serialOf(s), "still served while the CA is down")
	s, err = other.SVID()
	require.NoError(t, err)
	require.Nil(t, s)
}

func TestDiskCacheRenewsRestoredSVIDWhenCABack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newTestCA(t, nil, nil)
		api := attestedWorkload("shop", "api")
		path, serials := writeTestCache(t, c, api)

		clock := clocktest.New(time.Now())
		signer := newFakeSigner(c, nil)
		m, err := NewManager(ManagerConfig{Signer: signer, TrustDomain: testTD, TTL: time.Hour, CacheFile: path, Clock: clock.Now, After: clock.After})
		require.NoError(t, err)
		startManager(t, m)
		sub, err := m.Subscribe(context.Background(), api)
		require.NoError(t, err)
		defer sub.Close()
		passTime(clock, m.cfg.BatchWindow)
		first := waitSVID(t, sub, nil, time.Second)
		require.Equal(t, serials[0], serialOf(first))
		require.Zero(t, signer.numCalls(), "a fresh cached SVID is not renewed early")

		clock.Advance(40 * time.Minute)
		synctest.Wait()
		second := waitSVID(t, sub, first, 5*time.Second)
		requireValidSVID(t, second, api.ID, m.Bundles(), clock.Now())
	})
}

// editCacheFile rewrites the cache file's envelope.
func editCacheFile(t *testing.T, path string, fn func(*cacheFile)) {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	var f cacheFile
	require.NoError(t, json.Unmarshal(data, &f))
	fn(&f)
	data, err = json.Marshal(f)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path, data, 0o600))
}

// editCacheBody rewrites the body with a correct checksum, as a buggy or
// malicious writer could.
func editCacheBody(t *testing.T, path string, fn func(*cacheBody)) {
	t.Helper()
	editCacheFile(t, path, func(f *cacheFile) {
		var b cacheBody
		require.NoError(t, json.Unmarshal(f.Body, &b))
		fn(&b)
		raw, err := json.Marshal(b)
		require.NoError(t, err)
		sum := sha256.Sum256(raw)
		f.Body, f.SHA256 = raw, sum[:]
	})
}

func TestDiskCacheCorruptIsDiscarded(t *testing.T) {
	c := newTestCA(t, nil, nil)
	other := newTestCA(t, nil, nil)
	api, admin := attestedWorkload("shop", "api"), attestedWorkload("shop", "admin")
	src, _ := writeTestCache(t, c, api)
	srcData, err := os.ReadFile(src)
	require.NoError(t, err)

	for _, tt := range []struct {
		name      string
		edit      func(t *testing.T, path string)
		as        Workload      // who asks afterwards
		advance   time.Duration // clock jump before the restart
		wholeFile bool          // the file is rejected (and removed)
	}{
		{name: "flipped byte in body", wholeFile: true, edit: func(t *testing.T, p string) {
			editCacheFile(t, p, func(f *cacheFile) { f.Body[len(f.Body)/2] ^= 0x01 })
		}},
		{name: "flipped byte in checksum", wholeFile: true, edit: func(t *testing.T, p string) {
			editCacheFile(t, p, func(f *cacheFile) { f.SHA256[0] ^= 0x80 })
		}},
		{name: "truncated", wholeFile: true, edit: func(t *testing.T, p string) {
			require.NoError(t, os.WriteFile(p, srcData[:len(srcData)/2], 0o600))
		}},
		{name: "empty", wholeFile: true, edit: func(t *testing.T, p string) {
			require.NoError(t, os.WriteFile(p, nil, 0o600))
		}},
		{name: "wrong version", wholeFile: true, edit: func(t *testing.T, p string) {
			editCacheFile(t, p, func(f *cacheFile) { f.Version = cacheVersion + 1 })
		}},
		{name: "wrong trust domain", wholeFile: true, edit: func(t *testing.T, p string) {
			editCacheBody(t, p, func(b *cacheBody) { b.TrustDomain = "other.example" })
		}},
		{name: "key not matching leaf", edit: func(t *testing.T, p string) {
			editCacheBody(t, p, func(b *cacheBody) {
				k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
				require.NoError(t, err)
				b.Entries[0].KeyPKCS8, err = x509.MarshalPKCS8PrivateKey(k)
				require.NoError(t, err)
			})
		}},
		{name: "chain not verifying to the cached bundle", edit: func(t *testing.T, p string) {
			editCacheBody(t, p, func(b *cacheBody) { b.Bundle = [][]byte{other.Bundle().X509Authorities()[0].Raw} })
		}},
		{name: "no bundle", edit: func(t *testing.T, p string) {
			editCacheBody(t, p, func(b *cacheBody) { b.Bundle = nil })
		}},
		{name: "chain missing its intermediate", edit: func(t *testing.T, p string) {
			editCacheBody(t, p, func(b *cacheBody) { b.Entries[0].Chain = b.Entries[0].Chain[:1] })
		}},
		{name: "entry says another ID", as: admin, edit: func(t *testing.T, p string) {
			editCacheBody(t, p, func(b *cacheBody) {
				b.Entries[0].ID, b.Entries[0].Key = admin.ID.String(), entryKey(admin)
			})
		}},
		{name: "entry keyed for another workload", as: admin, edit: func(t *testing.T, p string) {
			editCacheBody(t, p, func(b *cacheBody) { b.Entries[0].Key = entryKey(admin) })
		}},
		{name: "entry attested as another workload", as: admin, edit: func(t *testing.T, p string) {
			editCacheBody(t, p, func(b *cacheBody) {
				b.Entries[0].Key, b.Entries[0].Attested = entryKey(admin), admin.Attested
			})
		}},
		{name: "expired", advance: 2 * time.Hour, edit: func(*testing.T, string) {}},
		{name: "readable by others", wholeFile: true, edit: func(t *testing.T, p string) {
			require.NoError(t, os.Chmod(p, 0o644))
		}},
		{name: "writable by the group", wholeFile: true, edit: func(t *testing.T, p string) {
			require.NoError(t, os.Chmod(p, 0o620))
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "svids.json")
			require.NoError(t, os.WriteFile(path, srcData, 0o600))
			tt.edit(t, path)
			clock := clocktest.New(time.Now())
			clock.Advance(tt.advance)
			down := newFakeSigner(c, nil)
			down.failRPC(codes.Unavailable)
			logger, logs := newTestLogger()
			m, err := NewManager(ManagerConfig{Signer: down, TrustDomain: testTD, CacheFile: path, Logger: logger, Clock: clock.Now})
			require.NoError(t, err)
			as := tt.as
			if as.ID.IsZero() {
				as = api
			}
			sub, err := m.Subscribe(context.Background(), as)
			require.NoError(t, err)
			defer sub.Close()
			s, err := sub.SVID()
			require.NoError(t, err)
			require.Nil(t, s, "a corrupt cache entry was served")
			m.mu.Lock()
			for _, e := range m.entries {
				require.Nil(t, e.svid, "a corrupt cache entry was loaded")
			}
			m.mu.Unlock()
			require.Contains(t, strings.ToLower(logs.String()), "discarding", "the discard is logged")
			for _, b := range m.Bundles().Bundles() {
				require.False(t, b.Empty(), "an empty bundle is never restored")
			}
			if tt.wholeFile {
				_, err := os.Stat(path)
				require.ErrorIs(t, err, os.ErrNotExist, "a corrupt file is removed")
			}
		})
	}
}

func TestDiskCacheMissingFileIsFine(t *testing.T) {
	c := newTestCA(t, nil, nil)
	logger, logs := newTestLogger()
	path := filepath.Join(t.TempDir(), "none", "svids.json")
	m, err := NewManager(ManagerConfig{Signer: newFakeSigner(c, nil), TrustDomain: testTD, CacheFile: path, Logger: logger})
	require.NoError(t, err)
	require.NotContains(t, logs.String(), "discarding")
	m.SetBundle(c.Bundle())
	startManager(t, m)
	sub, err := m.Subscribe(context.Background(), attestedWorkload("shop", "api"))
	require.NoError(t, err)
	defer sub.Close()
	waitSVID(t, sub, nil, 5*time.Second)
	require.Eventually(t, func() bool { _, err := os.Stat(path); return err == nil }, 5*time.Second, 10*time.Millisecond,
		"the cache is written while running, not only at shutdown")
}
