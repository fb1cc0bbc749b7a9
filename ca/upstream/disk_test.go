package upstream

import (
	"context"
	"crypto"
	"crypto/x509"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func mint(t *testing.T, d *Disk) *MintResponse {
	t.Helper()
	key := newKey(t)
	resp, err := d.MintX509CA(context.Background(), MintRequest{
		CSR: newCSR(t, key), TTL: time.Hour, URISAN: "spiffe://example.org", CommonName: "Lanyard intermediate d",
	})
	require.NoError(t, err)
	requireIntermediate(t, resp.CertChain[0], key.Public(), "spiffe://example.org", "Lanyard intermediate d")
	require.Equal(t, t0.Add(-IntermediateBackdate), resp.CertChain[0].NotBefore)
	verifyResponse(t, resp, t0)
	return resp
}

func TestDiskRoot(t *testing.T) {
	dir := t.TempDir()
	root, rootKey := makeCert(t, rootSpec("operator root"))
	d, err := NewDisk(DiskConfig{
		CertFile: writeCerts(t, filepath.Join(dir, "ca.pem"), root),
		KeyFile:  writeSEC1Key(t, filepath.Join(dir, "ca-key.pem"), rootKey),
		Clock:    fixedClock(t0),
	})
	require.NoError(t, err)
	roots, err := d.Bundle(context.Background())
	require.NoError(t, err)
	require.Len(t, roots, 1)
	require.True(t, roots[0].Equal(root))

	resp := mint(t, d)
	require.Len(t, resp.CertChain, 1, "the root is not part of the chain")
	require.NoError(t, resp.CertChain[0].CheckSignatureFrom(root))
}

// The files a SelfSigned wrote (PKCS#8 key) work as operator files too.
func TestDiskRootFromSelfSigned(t *testing.T) {
	dir := t.TempDir()
	_, err := NewSelfSigned(SelfSignedConfig{Dir: dir, Clock: fixedClock(t0)})
	require.NoError(t, err)
	d, err := NewDisk(DiskConfig{
		CertFile: filepath.Join(dir, SelfSignedCertFile),
		KeyFile:  filepath.Join(dir, SelfSignedKeyFile),
		Clock:    fixedClock(t0),
	})
	require.NoError(t, err)
	resp := mint(t, d)
	require.Len(t, resp.CertChain, 1)
}

func TestDiskRootCappedAtExpiry(t *testing.T) {
	dir := t.TempDir()
	spec := rootSpec("short root")
	spec.notAfter = t0.Add(30 * time.Minute)
	root, rootKey := makeCert(t, spec)
	d, err := NewDisk(DiskConfig{
		CertFile: writeCerts(t, filepath.Join(dir, "ca.pem"), root),
		KeyFile:  writeSEC1Key(t, filepath.Join(dir, "ca-key.pem"), rootKey),
		Clock:    fixedClock(t0),
	})
	require.NoError(t, err)
	resp, err := d.MintX509CA(context.Background(), MintRequest{CSR: newCSR(t, newKey(t)), TTL: 24 * time.Hour})
	require.NoError(t, err)
	require.Equal(t, root.NotAfter, resp.CertChain[0].NotAfter)
}

func TestDiskIntermediate(t *testing.T) {
	root, rootKey := makeCert(t, rootSpec("operator root"))
	oldRoot, _ := makeCert(t, rootSpec("old operator root"))
	op1, op1Key := makeCert(t, intermediateSpec("operator intermediate 1", root, rootKey))
	op2, op2Key := makeCert(t, intermediateSpec("operator intermediate 2", op1, op1Key))

	for _, tt := range []struct {
		name      string
		certFile  []*x509.Certificate
		key       crypto.Signer
		bundle    []*x509.Certificate
		wantChain []*x509.Certificate // after the new intermediate
	}{
		{name: "intermediate", certFile: []*x509.Certificate{op1}, key: op1Key, bundle: []*x509.Certificate{root}, wantChain: []*x509.Certificate{op1}},
		{name: "root in the cert file", certFile: []*x509.Certificate{op1, root}, key: op1Key, bundle: []*x509.Certificate{root}, wantChain: []*x509.Certificate{op1}},
		{name: "two levels", certFile: []*x509.Certificate{op2, op1}, key: op2Key, bundle: []*x509.Certificate{root}, wantChain: []*x509.Certificate{op2, op1}},
		{name: "two levels and root", certFile: []*x509.Certificate{op2, op1, root}, key: op2Key, bundle: []*x509.Certificate{root}, wantChain: []*x509.Certificate{op2, op1}},
		{name: "two roots in the bundle", certFile: []*x509.Certificate{op1}, key: op1Key, bundle: []*x509.Certificate{oldRoot, root}, wantChain: []*x509.Certificate{op1}},
		{name: "root with its bundle", certFile: []*x509.Certificate{root}, key: rootKey, bundle: []*x509.Certificate{root}, wantChain: nil},
		{name: "root with a rotation bundle", certFile: []*x509.Certificate{root}, key: rootKey, bundle: []*x509.Certificate{oldRoot, root}, wantChain: nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			d, err := NewDisk(DiskConfig{
				CertFile:   writeCerts(t, filepath.Join(dir, "ca.pem"), tt.certFile...),
				KeyFile:    writeSEC1Key(t, filepath.Join(dir, "ca-key.pem"), tt.key),
				BundleFile: writeCerts(t, filepath.Join(dir, "bundle.pem"), tt.bundle...),
				Clock:      fixedClock(t0),
			})
			require.NoError(t, err)
			roots, err := d.Bundle(context.Background())
			require.NoError(t, err)
			require.Len(t, roots, len(tt.bundle))
			for i := range roots {
				require.True(t, roots[i].Equal(tt.bundle[i]))
			}

			resp := mint(t, d)
			require.Len(t, resp.CertChain, 1+len(tt.wantChain))
			for i, c := range tt.wantChain {
				require.True(t, resp.CertChain[1+i].Equal(c), "chain[%d] is %s", 1+i, resp.CertChain[1+i].Subject)
			}
			require.NoError(t, resp.CertChain[0].CheckSignatureFrom(tt.certFile[0]))
		})
	}
}

func TestDiskRefuses(t *testing.T) {
	root, rootKey := makeCert(t, rootSpec("operator root"))
	otherRoot, otherKey := makeCert(t, rootSpec("other root"))
	op, opKey := makeCert(t, intermediateSpec("operator intermediate", root, rootKey))
	leaf, leafKey := makeCert(t, caSpec{cn: "leaf", keyUsage: x509.KeyUsageDigitalSignature, pathLen: -1, parent: root, parentKey: rootKey})
	noSign := rootSpec("no keyCertSign")
	noSign.keyUsage = x509.KeyUsageDigitalSignature
	noSignCA, noSignKey := makeCert(t, noSign)
	expSpec := intermediateSpec("expired intermediate", root, rootKey)
	expSpec.notAfter = t0.Add(-time.Minute)
	expired, expiredKey := makeCert(t, expSpec)
	expRootSpec := rootSpec("expired root")
	expRootSpec.notAfter = t0.Add(-time.Minute)
	expiredRoot, expiredRootKey := makeCert(t, expRootSpec)

	for _, tt := range []struct {
		name    string
		certs   []*x509.Certificate
		key     crypto.Signer
		bundle  []*x509.Certificate // nil: no bundle file
		cfg     func(dir string, c *DiskConfig)
		wantErr string
	}{
		{name: "not a CA", certs: []*x509.Certificate{leaf}, key: leafKey, bundle: []*x509.Certificate{root}, wantErr: "not a CA certificate"},
		{name: "CA without keyCertSign", certs: []*x509.Certificate{noSignCA}, key: noSignKey, wantErr: "keyCertSign"},
		{name: "key of another CA", certs: []*x509.Certificate{root}, key: otherKey, wantErr: "does not match"},
		{name: "intermediate key mismatch", certs: []*x509.Certificate{op}, key: rootKey, bundle: []*x509.Certificate{root}, wantErr: "does not match"},
		{name: "intermediate without bundle", certs: []*x509.Certificate{op}, key: opKey, wantErr: "bundle file is required"},
		{name: "intermediate and root without bundle", certs: []*x509.Certificate{op, root}, key: opKey, wantErr: "bundle file is required"},
		{name: "intermediate not chaining to bundle", certs: []*x509.Certificate{op}, key: opKey, bundle: []*x509.Certificate{otherRoot}, wantErr: "does not chain"},
		{name: "root not in its bundle", certs: []*x509.Certificate{root}, key: rootKey, bundle: []*x509.Certificate{otherRoot}, wantErr: "does not chain"},
		{name: "expired intermediate", certs: []*x509.Certificate{expired}, key: expiredKey, bundle: []*x509.Certificate{root}, wantErr: "does not chain"},
		{name: "expired root", certs: []*x509.Certificate{expiredRoot}, key: expiredRootKey, wantErr: "expired"},
		{name: "other root's intermediate", certs: []*x509.Certificate{op}, key: opKey, bundle: []*x509.Certificate{otherRoot, otherRoot}, wantErr: "does not chain"},
		{
			name: "no cert file", key: rootKey,
			cfg:     func(_ string, c *DiskConfig) { c.CertFile = "" },
			wantErr: "cert and key files are required",
		},
		{
			name: "no key file", certs: []*x509.Certificate{root},
			cfg:     func(_ string, c *DiskConfig) { c.KeyFile = "" },
			wantErr: "cert and key files are required",
		},
		{
			name: "missing cert file", key: rootKey,
			cfg:     func(dir string, c *DiskConfig) { c.CertFile = filepath.Join(dir, "nope.pem") },
			wantErr: "nope.pem",
		},
		{
			name: "missing key file", certs: []*x509.Certificate{root},
			cfg:     func(dir string, c *DiskConfig) { c.KeyFile = filepath.Join(dir, "nope-key.pem") },
			wantErr: "nope-key.pem",
		},
		{
			name: "missing bundle file", certs: []*x509.Certificate{op}, key: opKey,
			cfg:     func(dir string, c *DiskConfig) { c.BundleFile = filepath.Join(dir, "nope-bundle.pem") },
			wantErr: "nope-bundle.pem",
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			var cfg DiskConfig
			cfg.Clock = fixedClock(t0)
			if tt.certs != nil {
				cfg.CertFile = writeCerts(t, filepath.Join(dir, "ca.pem"), tt.certs...)
			}
			if tt.key != nil {
				cfg.KeyFile = writeSEC1Key(t, filepath.Join(dir, "ca-key.pem"), tt.key)
			}
			if tt.bundle != nil {
				cfg.BundleFile = writeCerts(t, filepath.Join(dir, "bundle.pem"), tt.bundle...)
			}
			if tt.cfg != nil {
				tt.cfg(dir, &cfg)
			}
			d, err := NewDisk(cfg)
			require.ErrorContains(t, err, tt.wantErr)
			require.Nil(t, d)
		})
	}
}
