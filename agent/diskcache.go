package agent

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/lanyard-id/lanyard/internal/atomicfile"
)

// The disk cache lets a restarted agent serve still-valid SVIDs at once
// while the CA is unreachable. It holds private keys: the file is 0600 in a
// 0700 directory, written atomically, and carries a SHA-256 of its body; a
// file that fails any check is discarded, never served. Tokens are not
// stored: a token entry is found again by the hash of the token the
// workload presents when it reconnects.
const cacheVersion = 1

type cacheFile struct {
	Version int    `json:"version"`
	Body    []byte `json:"body"`   // JSON of cacheBody
	SHA256  []byte `json:"sha256"` // of Body
}

type cacheBody struct {
	TrustDomain string       `json:"trustDomain"`
	Bundle      [][]byte     `json:"bundle"` // DER roots
	Entries     []cacheEntry `json:"entries"`
}

type cacheEntry struct {
	Key      string    `json:"entry"`
	ID       string    `json:"id"`
	Attested *Attested `json:"attested,omitempty"`
	Chain    [][]byte  `json:"chain"` // DER, leaf first
	KeyPKCS8 []byte    `json:"privateKey"`
}

// persist writes the cache file when something changed.
func (m *Manager) persist() {
	if m.cfg.CacheFile == "" {
		return
	}
	m.mu.Lock()
	if !m.dirty {
		m.mu.Unlock()
		return
	}
	m.dirty = false
	body := cacheBody{TrustDomain: m.cfg.TrustDomain.Name()}
	if b, ok := m.bundles.Load().Get(m.cfg.TrustDomain); ok {
		for _, c := range b.X509Authorities() {
			body.Bundle = append(body.Bundle, c.Raw)
		}
	}
	for _, e := range m.entries {
		if e.svid == nil {
			continue
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(e.svid.PrivateKey)
		if err != nil {
			continue
		}
		ce := cacheEntry{Key: e.key, ID: e.svid.ID.String(), Attested: e.workload.Attested, KeyPKCS8: keyDER}
		for _, c := range e.svid.Certificates {
			ce.Chain = append(ce.Chain, c.Raw)
		}
		body.Entries = append(body.Entries, ce)
	}
	m.mu.Unlock()
	if err := writeCache(m.cfg.CacheFile, body); err != nil {
		m.cfg.Logger.Error("write SVID cache", "path", m.cfg.CacheFile, "error", err)
		m.mu.Lock()
		m.dirty = true
		m.mu.Unlock()
	}
}

func writeCache(path string, body cacheBody) error {
	raw, err := json.Marshal(body)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(raw)
	data, err := json.Marshal(cacheFile{Version: cacheVersion, Body: raw, SHA256: sum[:]})
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return atomicfile.Write(path, data, 0o600)
}

// loadCache restores valid SVIDs from the cache file. Anything that does
// not check out is discarded with a log line.
func (m *Manager) loadCache() {
	body, err := readCache(m.cfg.CacheFile, m.cfg.TrustDomain)
	if errors.Is(err, fs.ErrNotExist) {
		return
	}
	if err != nil {
		m.cfg.Logger.Warn("discarding SVID cache", "path", m.cfg.CacheFile, "error", err)
		_ = os.Remove(m.cfg.CacheFile)
		return
	}
	var roots []*x509.Certificate
	for _, der := range body.Bundle {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			m.cfg.Logger.Warn("discarding SVID cache", "path", m.cfg.CacheFile, "error", err)
			return
		}
		roots = append(roots, c)
	}
	bundle := x509bundle.FromX509Authorities(m.cfg.TrustDomain, roots)
	if len(roots) > 0 {
		m.bundles.Store(x509bundle.NewSet(bundle))
	}
	now := m.cfg.Clock()
	loaded := 0
	for _, ce := range body.Entries {
		svid, err := cachedSVID(ce, bundle, now)
		if err != nil {
			m.cfg.Logger.Warn("discarding cached SVID", "spiffe_id", ce.ID, "error", err)
			continue
		}
		leaf := svid.Certificates[0]
		e := &entry{key: ce.Key, svid: svid, subs: map[*subscription]struct{}{}, idleAt: now, renewAt: renewalTime(leaf, leaf.NotBefore)}
		e.workload.ID = svid.ID
		e.workload.Attested = ce.Attested
		m.entries[ce.Key] = e
		loaded++
	}
	m.cfg.Logger.Info("SVID cache loaded", "path", m.cfg.CacheFile, "svids", loaded)
}

func readCache(path string, td spiffeid.TrustDomain) (*cacheBody, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	fi, err := fh.Stat()
	if err != nil {
		return nil, err
	}
	// The file vouches for its own bundle: only a file nobody else could
	// have written (or read: its keys) is trusted.
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("mode %s: the cache must be a regular file, 0600", fi.Mode())
	}
	data, err := io.ReadAll(fh)
	if err != nil {
		return nil, err
	}
	var f cacheFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	if f.Version != cacheVersion {
		return nil, fmt.Errorf("version %d, want %d", f.Version, cacheVersion)
	}
	sum := sha256.Sum256(f.Body)
	if len(f.SHA256) != len(sum) || string(f.SHA256) != string(sum[:]) {
		return nil, errors.New("checksum mismatch")
	}
	var body cacheBody
	if err := json.Unmarshal(f.Body, &body); err != nil {
		return nil, fmt.Errorf("parse body: %w", err)
	}
	if body.TrustDomain != td.Name() {
		return nil, fmt.Errorf("cache is for trust domain %q", body.TrustDomain)
	}
	return &body, nil
}

// cachedSVID parses an entry and checks it: the key matches the leaf, the
// entry is keyed for this SVID's workload, and the chain verifies against
// the cached bundle now (so an expired SVID is refused too).
func cachedSVID(ce cacheEntry, bundle *x509bundle.Bundle, now time.Time) (*x509svid.SVID, error) {
	var der []byte
	for _, c := range ce.Chain {
		der = append(der, c...)
	}
	svid, err := x509svid.ParseRaw(der, ce.KeyPKCS8)
	if err != nil {
		return nil, err
	}
	if svid.ID.String() != ce.ID {
		return nil, fmt.Errorf("entry says %s, certificate says %s", ce.ID, svid.ID)
	}
	// An entry keyed for another credential would be served to it.
	if ce.Attested != nil {
		if want := entryKey(Workload{ID: svid.ID, Attested: ce.Attested}); ce.Key != want {
			return nil, fmt.Errorf("entry key %q does not match its workload", ce.Key)
		}
	} else if hash, ok := strings.CutPrefix(ce.Key, svid.ID.String()+"|token|"); !ok || len(hash) != 32 {
		return nil, fmt.Errorf("entry key %q does not match its workload", ce.Key)
	}
	if _, _, err := x509svid.Verify(svid.Certificates, bundle, x509svid.WithTime(now)); err != nil {
		return nil, err
	}
	return svid, nil
}
