// Package catest is the one test CA of Lanyard's tests: the real issuing
// pipeline (ca.CA on a ca.Authority on a self-signed root in a temp dir),
// recording into a storagetest.Recorder, all on one clock (an
// internal/clocktest clock, or the real one). It issues X.509-SVIDs for
// tests of code that consumes them, as go-spiffe's internal/test CA does.
//
// Package ca's own tests cannot import it (ca would import itself); they
// use the same clock and recorder.
package catest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/stretchr/testify/require"

	"github.com/lanyard-id/lanyard/ca"
	"github.com/lanyard-id/lanyard/ca/upstream"
	"github.com/lanyard-id/lanyard/storage/storagetest"
)

// Options configure a test CA; the zero value is a CA for example.org on
// the real clock.
type Options struct {
	TrustDomain spiffeid.TrustDomain
	// Clock is every part's clock (default time.Now); pass a
	// clocktest.Clock's Now to drive time.
	Clock func() time.Time
	// AuthorityTTL of the intermediate (default 72h, so that leaves are
	// not capped by it).
	AuthorityTTL time.Duration
	// NoPrepare leaves the Authority without an intermediate.
	NoPrepare bool
	// Config changes the CA's configuration before ca.New.
	Config func(*ca.Config)
}

// CA is a test CA.
type CA struct {
	TrustDomain spiffeid.TrustDomain
	CA          *ca.CA
	Authority   *ca.Authority
	Recorder    *storagetest.Recorder
	Now         func() time.Time
}

// New builds a test CA whose files live in t.TempDir.
func New(t testing.TB, o Options) *CA {
	t.Helper()
	c, err := Build(t.TempDir(), o)
	require.NoError(t, err)
	return c
}

// Build builds a test CA whose root lives in dir, for examples, which
// have no testing.TB.
func Build(dir string, o Options) (*CA, error) {
	if o.TrustDomain.IsZero() {
		o.TrustDomain = spiffeid.RequireTrustDomainFromString("example.org")
	}
	if o.Clock == nil {
		o.Clock = time.Now
	}
	if o.AuthorityTTL == 0 {
		o.AuthorityTTL = 72 * time.Hour
	}
	root, err := upstream.NewSelfSigned(upstream.SelfSignedConfig{Dir: dir, TrustDomain: o.TrustDomain.Name(), Clock: o.Clock})
	if err != nil {
		return nil, err
	}
	auth, err := ca.NewAuthority(ca.AuthorityConfig{TrustDomain: o.TrustDomain, Upstream: root, TTL: o.AuthorityTTL, Name: "test", Clock: o.Clock})
	if err != nil {
		return nil, err
	}
	if !o.NoPrepare {
		if err := auth.Prepare(context.Background()); err != nil {
			return nil, err
		}
	}
	rec := &storagetest.Recorder{}
	cfg := ca.Config{TrustDomain: o.TrustDomain, Keys: auth, Recorder: rec, Clock: o.Clock}
	if o.Config != nil {
		o.Config(&cfg)
	}
	c, err := ca.New(cfg)
	if err != nil {
		return nil, err
	}
	return &CA{TrustDomain: o.TrustDomain, CA: c, Authority: auth, Recorder: rec, Now: o.Clock}, nil
}

// Bundle is the CA's trust bundle.
func (c *CA) Bundle() *x509bundle.Bundle {
	return x509bundle.FromX509Authorities(c.TrustDomain, c.Authority.Bundle().Roots)
}

// Issue issues a workload X.509-SVID for id (spiffe://<td>/ns/<ns>/sa/<sa>)
// with a fresh P-256 key through the pipeline, recorded like any other.
func (c *CA) Issue(t testing.TB, id spiffeid.ID) *x509svid.SVID {
	t.Helper()
	svid, err := c.IssueSVID(id)
	require.NoError(t, err)
	return svid
}

// IssueSVID is Issue for examples.
func (c *CA) IssueSVID(id spiffeid.ID) (*x509svid.SVID, error) {
	segs := strings.Split(strings.TrimPrefix(id.Path(), "/"), "/")
	if len(segs) != 4 || segs[0] != "ns" || segs[2] != "sa" {
		return nil, fmt.Errorf("catest: %s is not a workload ID", id)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return nil, err
	}
	issued, err := c.CA.SignWorkload(context.Background(), ca.WorkloadRequest{
		Subject: ca.Subject{Namespace: segs[1], ServiceAccount: segs[3]}, CSR: csr, Caller: "catest",
	})
	if err != nil {
		return nil, err
	}
	if issued.ID != id {
		return nil, fmt.Errorf("catest: issued %s for %s", issued.ID, id)
	}
	return &x509svid.SVID{ID: issued.ID, Certificates: issued.Chain, PrivateKey: key}, nil
}

// Verify checks chain against the CA's roots at the CA's now and returns
// its SPIFFE ID.
func (c *CA) Verify(t testing.TB, chain []*x509.Certificate) spiffeid.ID {
	t.Helper()
	id, chains, err := x509svid.Verify(chain, c.Bundle(), x509svid.WithTime(c.Now()))
	require.NoError(t, err)
	require.NotEmpty(t, chains)
	return id
}
