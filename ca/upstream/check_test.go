package upstream

import (
	"crypto"
	"crypto/x509"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestCheckMinted(t *testing.T) {
	const td = "spiffe://example.org"
	root, rootKey := makeCert(t, rootSpec("vault root"))
	otherRoot, otherKey := makeCert(t, rootSpec("not our root"))
	mid, midKey := makeCert(t, intermediateSpec("vault intermediate", root, rootKey))
	key := newKey(t)
	csr := newCSR(t, key)
	signers := map[string]crypto.Signer{"root": rootKey, "other": otherKey, "mid": midKey}
	mintBy := func(issuer *x509.Certificate, by, uri string, csr []byte) *x509.Certificate {
		t.Helper()
		c, err := signIntermediate(MintRequest{CSR: csr, TTL: time.Hour, URISAN: uri, CommonName: "i"}, issuer, signers[by], t0)
		require.NoError(t, err)
		return c
	}
	good := mintBy(root, "root", td, csr)
	leaf, _ := makeCert(t, caSpec{cn: "leaf", keyUsage: x509.KeyUsageDigitalSignature, pathLen: -1, parent: root, parentKey: rootKey})
	noSign, _ := makeCert(t, caSpec{cn: "nosign", isCA: true, keyUsage: x509.KeyUsageDigitalSignature, pathLen: -1, parent: root, parentKey: rootKey})

	for _, tt := range []struct {
		name    string
		chain   []*x509.Certificate
		roots   []*x509.Certificate
		now     time.Time
		wantErr string
	}{
		{name: "good", chain: []*x509.Certificate{good}, roots: []*x509.Certificate{root}},
		{name: "good under an upstream intermediate", chain: []*x509.Certificate{mintBy(mid, "mid", td, csr), mid}, roots: []*x509.Certificate{root}},
		{name: "no certificate", wantErr: "no certificate", roots: []*x509.Certificate{root}},
		{name: "no roots", chain: []*x509.Certificate{good}, wantErr: "no trusted root"},
		{name: "another key", chain: []*x509.Certificate{mintBy(root, "root", td, newCSR(t, newKey(t)))}, roots: []*x509.Certificate{root}, wantErr: "not for our public key"},
		{name: "no URI SAN", chain: []*x509.Certificate{mintBy(root, "root", "", csr)}, roots: []*x509.Certificate{root}, wantErr: "URI SAN"},
		{name: "other trust domain", chain: []*x509.Certificate{mintBy(root, "root", "spiffe://evil.org", csr)}, roots: []*x509.Certificate{root}, wantErr: "URI SAN"},
		{name: "another root", chain: []*x509.Certificate{mintBy(otherRoot, "other", td, csr)}, roots: []*x509.Certificate{root}, wantErr: "does not chain"},
		{name: "missing upstream intermediate", chain: []*x509.Certificate{mintBy(mid, "mid", td, csr)}, roots: []*x509.Certificate{root}, wantErr: "does not chain"},
		{name: "expired", chain: []*x509.Certificate{good}, roots: []*x509.Certificate{root}, now: t0.Add(2 * time.Hour), wantErr: "does not chain"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			now := tt.now
			if now.IsZero() {
				now = t0
			}
			err := CheckMinted(csr, td, tt.chain, tt.roots, now)
			if tt.wantErr == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, ErrRefused)
			require.ErrorContains(t, err, tt.wantErr)
		})
	}
	// Certificates for our key that are not usable CAs (checked before
	// the signature, so a copy with our key stands in).
	for _, tt := range []struct {
		cert    *x509.Certificate
		wantErr string
	}{{leaf, "not a CA"}, {noSign, "keyCertSign"}} {
		c := *tt.cert
		c.PublicKey = key.Public()
		err := CheckMinted(csr, td, []*x509.Certificate{&c}, []*x509.Certificate{root}, t0)
		require.ErrorIs(t, err, ErrRefused)
		require.ErrorContains(t, err, tt.wantErr)
	}
}
