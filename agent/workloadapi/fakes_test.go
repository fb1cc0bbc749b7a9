package workloadapi_test

import (
	"crypto"
	"sync/atomic"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/lanyard-id/lanyard/ca/catest"
)

// newCA is the shared test CA (ca/catest) for trust domain td.
func newCA(t testing.TB, td string) *catest.CA {
	t.Helper()
	return catest.New(t, catest.Options{TrustDomain: spiffeid.RequireTrustDomainFromString(td)})
}

// sameKey reports whether two private keys are the same key.
func sameKey(a, b crypto.Signer) bool {
	return a.(interface{ Equal(crypto.PrivateKey) bool }).Equal(b)
}

// fakeMetric is a Gauge and a Counter.
type fakeMetric struct{ n atomic.Int64 }

func (m *fakeMetric) Inc() { m.n.Add(1) }
func (m *fakeMetric) Dec() { m.n.Add(-1) }
