package server

import (
	"encoding/pem"
	"strings"
	"testing"

	"github.com/lanyard-id/lanyard/storage/storagetest"

	"github.com/lanyard-id/lanyard/ca"
)

type noKeys struct{}

func (noKeys) Current() (*ca.X509CA, error) { return nil, ca.ErrNotReady }

// FuzzIstioRequest feeds the parsers of the Istio API's outside input:
// the PEM CSR, validity_duration and an ImpersonatedIdentity.
func FuzzIstioRequest(f *testing.F) {
	issuer, err := ca.New(ca.Config{TrustDomain: istioTD, Keys: noKeys{}, Recorder: &storagetest.Recorder{}})
	if err != nil {
		f.Fatal(err)
	}
	s := &istioService{ca: issuer}
	csr := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: []byte{0x30, 0x03, 0x02, 0x01, 0x00}})
	for _, seed := range []struct {
		csr      string
		validity int64
		id       string
	}{
		{string(csr), 3600, "spiffe://cluster.local/ns/default/sa/app"},
		{string(csr) + "\n\n", 0, "spiffe://cluster.local/ns/default/sa/app/extra"},
		{"-----BEGIN CERTIFICATE REQUEST-----\n-----END CERTIFICATE REQUEST-----\n", -1, "spiffe://example.org/ns/a/sa/b"},
		{"junk", 1 << 62, "spiffe://cluster.local/ns/UPPER/sa/app"},
		{"", -1 << 63, "spiffe://cluster.local/ns//sa/app"},
		{strings.Repeat("A", 100), 86400, "spiffe://cluster.local/ns/a/sa/b%2F"},
	} {
		f.Add(seed.csr, seed.validity, seed.id)
	}
	f.Fuzz(func(t *testing.T, csr string, validitySeconds int64, id string) {
		if der, err := csrDER(csr); err == nil {
			if len(csr) > ca.MaxCSRSize || len(der) == 0 && !strings.Contains(csr, "REQUEST") {
				t.Fatalf("csrDER accepted %d bytes", len(csr))
			}
		}
		if ttl, err := validity(validitySeconds); err == nil && ttl < 0 {
			t.Fatalf("validity(%d) = %s", validitySeconds, ttl)
		}
		ns, name, got, err := s.parseWorkloadID(id)
		if err != nil {
			return
		}
		want, err := ca.WorkloadID(istioTD, ns, name)
		if err != nil || want != got || got.String() != id {
			t.Fatalf("parseWorkloadID(%q) = %s, %s, %s; WorkloadID gives %s (%v)", id, ns, name, got, want, err)
		}
	})
}
