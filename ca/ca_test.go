package ca

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/lanyard-id/lanyard/internal/clocktest"
	"github.com/lanyard-id/lanyard/storage/storagetest"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/stretchr/testify/require"

	"github.com/lanyard-id/lanyard/ca/upstream"
	"github.com/lanyard-id/lanyard/storage"
)

type caOptions struct {
	authTTL   time.Duration // intermediate TTL, default 72h so leaves are not capped
	noPrepare bool
	policy    Policy
	cfg       func(*Config)
}

type testCA struct {
	ca    *CA
	auth  *Authority
	rec   *storagetest.Recorder
	clock *clocktest.Clock
}

// newTestCA builds a CA on a real Authority on a self-signed root in a
// temp dir, all on one fake clock.
func newTestCA(t testing.TB, o caOptions) *testCA {
	t.Helper()
	clock := newFakeClock()
	root, err := upstream.NewSelfSigned(upstream.SelfSignedConfig{
		Dir: t.TempDir(), TrustDomain: testTD.Name(), Clock: clock.Now,
	})
	require.NoError(t, err)
	if o.authTTL == 0 {
		o.authTTL = 72 * time.Hour
	}
	auth, err := NewAuthority(AuthorityConfig{
		TrustDomain: testTD, Upstream: root, TTL: o.authTTL, Name: "test", Clock: clock.Now,
	})
	require.NoError(t, err)
	if !o.noPrepare {
		require.NoError(t, auth.Prepare(context.Background()))
	}
	rec := &storagetest.Recorder{}
	cfg := Config{TrustDomain: testTD, Keys: auth, Recorder: rec, Policy: o.policy, Clock: clock.Now}
	if o.cfg != nil {
		o.cfg(&cfg)
	}
	c, err := New(cfg)
	require.NoError(t, err)
	return &testCA{ca: c, auth: auth, rec: rec, clock: clock}
}

// verify checks the chain with go-spiffe against the Authority's roots.
func (tc *testCA) verify(t testing.TB, chain []*x509.Certificate) spiffeid.ID {
	t.Helper()
	bundle := x509bundle.FromX509Authorities(testTD, tc.auth.Bundle().Roots)
	id, chains, err := x509svid.Verify(chain, bundle, x509svid.WithTime(tc.clock.Now()))
	require.NoError(t, err)
	require.NotEmpty(t, chains)
	return id
}

func workloadReq(t testing.TB, kind string, opts ...csrOpt) WorkloadRequest {
	return WorkloadRequest{
		Subject: Subject{
			Cluster: "prod", Namespace: "default", ServiceAccount: "api",
			PodName: "api-7d9f", PodUID: "0b7e0c1c-1111-2222-3333-444455556666", NodeName: "node-1",
		},
		CSR:    csrFor(t, kind, opts...),
		Caller: "spiffe://example.org/lanyard/agent/prod/node-1",
	}
}

func TestNewConfig(t *testing.T) {
	keys, rec := &Authority{}, &storagetest.Recorder{}
	for _, tt := range []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{name: "defaults", cfg: Config{TrustDomain: testTD, Keys: keys, Recorder: rec}},
		{name: "no trust domain", cfg: Config{Keys: keys, Recorder: rec}, wantErr: "trust domain"},
		{name: "no keys", cfg: Config{TrustDomain: testTD, Recorder: rec}, wantErr: "key source"},
		{name: "no recorder", cfg: Config{TrustDomain: testTD, Keys: keys}, wantErr: "recorder"},
		{name: "default over max", cfg: Config{TrustDomain: testTD, Keys: keys, Recorder: rec, DefaultTTL: 2 * time.Hour, MaxTTL: time.Hour}, wantErr: "over the maximum"},
		{name: "negative default TTL", cfg: Config{TrustDomain: testTD, Keys: keys, Recorder: rec, DefaultTTL: -time.Hour}, wantErr: "negative TTL"},
		{name: "negative agent TTL", cfg: Config{TrustDomain: testTD, Keys: keys, Recorder: rec, AgentTTL: -time.Hour}, wantErr: "negative TTL"},
		{name: "negative max TTL", cfg: Config{TrustDomain: testTD, Keys: keys, Recorder: rec, MaxTTL: -time.Hour}, wantErr: "negative TTL"},
		{name: "bad policy", cfg: Config{TrustDomain: testTD, Keys: keys, Recorder: rec, Policy: Policy{Rules: []Rule{{Namespace: "x"}}}}, wantErr: "policy rule 0"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := New(tt.cfg)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, time.Hour, c.cfg.DefaultTTL)
			require.Equal(t, 24*time.Hour, c.cfg.MaxTTL)
			require.Equal(t, time.Hour, c.cfg.AgentTTL)
			require.Equal(t, testTD, c.TrustDomain())
		})
	}
}

func TestSignWorkloadLeaf(t *testing.T) {
	for _, tt := range []struct {
		name   string
		key    string
		wantKU x509.KeyUsage
	}{
		{name: "P-256", key: keyP256, wantKU: x509.KeyUsageDigitalSignature},
		{name: "P-384", key: keyP384, wantKU: x509.KeyUsageDigitalSignature},
		{name: "Ed25519", key: keyEd25519, wantKU: x509.KeyUsageDigitalSignature},
		{name: "RSA-2048", key: keyRSA2048, wantKU: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment},
		{name: "RSA-4096", key: keyRSA4096, wantKU: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tc := newTestCA(t, caOptions{})
			now := tc.clock.Now()
			req := workloadReq(t, tt.key)
			issued, err := tc.ca.SignWorkload(context.Background(), req)
			require.NoError(t, err)

			wantID := mustID(t, workloadURI("default", "api"))
			require.Equal(t, wantID, issued.ID)
			leaf := issued.Leaf()
			require.Len(t, leaf.URIs, 1)
			require.Equal(t, wantID.String(), leaf.URIs[0].String())
			require.Empty(t, leaf.DNSNames)
			require.Empty(t, leaf.IPAddresses)
			require.Empty(t, leaf.EmailAddresses)
			require.Equal(t, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, leaf.ExtKeyUsage)
			require.Equal(t, tt.wantKU, leaf.KeyUsage)
			require.True(t, leaf.BasicConstraintsValid)
			require.False(t, leaf.IsCA)
			require.Equal(t, 1, leaf.SerialNumber.Sign())
			require.LessOrEqual(t, leaf.SerialNumber.BitLen(), 128)
			require.Equal(t, leaf.SerialNumber.Text(16), issued.Serial)
			require.Equal(t, now.Add(-DefaultBackdate), leaf.NotBefore, "backdated for clock skew")
			require.Equal(t, now.Add(time.Hour), leaf.NotAfter)
			require.Equal(t, testKey(t, tt.key).Public(), leaf.PublicKey)
			// An X.509-SVID with an empty subject has a critical SAN.
			require.Empty(t, leaf.Subject.String())
			for _, e := range leaf.Extensions {
				if e.Id.Equal(oidExtSubjectAltName) {
					require.True(t, e.Critical, "SAN must be critical when the subject is empty")
				}
			}

			x, err := tc.auth.Current()
			require.NoError(t, err)
			require.Equal(t, x.Certificate.SubjectKeyId, leaf.AuthorityKeyId)
			require.Len(t, issued.Chain, 2)
			require.True(t, issued.Chain[1].Equal(x.Certificate))
			require.Equal(t, wantID, tc.verify(t, issued.Chain))

			recs := tc.rec.Records()
			require.Len(t, recs, 1)
			rec := recs[0]
			sum := sha256.Sum256(leaf.Raw)
			require.Equal(t, storage.CertificateRecord{
				Serial: issued.Serial, SPIFFEID: wantID.String(), Kind: KindWorkload,
				Cluster: "prod", Namespace: "default", ServiceAccount: "api",
				PodName: req.Subject.PodName, PodUID: req.Subject.PodUID, NodeName: "node-1",
				Caller: req.Caller, NotBefore: leaf.NotBefore, NotAfter: leaf.NotAfter,
				SHA256: sum[:], IssuerKeyID: hex.EncodeToString(x.Certificate.SubjectKeyId), IssuedAt: now,
			}, rec)
			require.Equal(t, x.KeyID, rec.IssuerKeyID)
			require.NoError(t, rec.Validate())
		})
	}
}

func TestSignWorkloadKind(t *testing.T) {
	tc := newTestCA(t, caOptions{})
	req := workloadReq(t, keyP256)
	req.Kind = KindIstio
	_, err := tc.ca.SignWorkload(context.Background(), req)
	require.NoError(t, err)
	require.Equal(t, KindIstio, tc.rec.Records()[0].Kind)
}

func TestSignWorkloadCSRWithOwnURI(t *testing.T) {
	tc := newTestCA(t, caOptions{})
	issued, err := tc.ca.SignWorkload(context.Background(), workloadReq(t, keyP256, withURIs(workloadURI("default", "api"))))
	require.NoError(t, err)
	require.Len(t, issued.Leaf().URIs, 1)
	tc.verify(t, issued.Chain)
}

func TestSignWorkloadTTL(t *testing.T) {
	for _, tt := range []struct {
		name    string
		cfg     func(*Config)
		policy  Policy
		ttl     time.Duration
		want    time.Duration
		wantErr error
	}{
		{name: "default", want: time.Hour},
		{name: "negative means default", ttl: -time.Minute, want: time.Hour},
		{name: "requested", ttl: 30 * time.Minute, want: 30 * time.Minute},
		{name: "one second", ttl: time.Second, want: time.Second},
		{name: "at max", ttl: 24 * time.Hour, want: 24 * time.Hour},
		{name: "over max", ttl: 24*time.Hour + time.Second, wantErr: ErrInvalidRequest},
		{name: "configured default", cfg: func(c *Config) { c.DefaultTTL = 2 * time.Hour }, want: 2 * time.Hour},
		{name: "configured max", cfg: func(c *Config) { c.MaxTTL = 2 * time.Hour }, ttl: 3 * time.Hour, wantErr: ErrInvalidRequest},
		{
			name:   "policy cap lowers the default",
			policy: Policy{Rules: []Rule{{Namespace: "default", ServiceAccount: "api", MaxTTL: 10 * time.Minute}}},
			want:   10 * time.Minute,
		},
		{
			name:   "policy cap allows less",
			policy: Policy{Rules: []Rule{{Namespace: "default", ServiceAccount: "*", MaxTTL: 10 * time.Minute}}},
			ttl:    5 * time.Minute, want: 5 * time.Minute,
		},
		{
			name:    "policy cap refuses more",
			policy:  Policy{Rules: []Rule{{Namespace: "*", ServiceAccount: "api", MaxTTL: 10 * time.Minute}}},
			ttl:     20 * time.Minute,
			wantErr: ErrInvalidRequest,
		},
		{
			name:   "policy cap above the CA maximum does not raise it",
			policy: Policy{Rules: []Rule{{Namespace: "*", ServiceAccount: "*", MaxTTL: 48 * time.Hour}}},
			ttl:    25 * time.Hour, wantErr: ErrInvalidRequest,
		},
		{
			name:   "other rule's cap does not apply",
			policy: Policy{Rules: []Rule{{Namespace: "other", ServiceAccount: "*", MaxTTL: time.Minute}}},
			ttl:    2 * time.Hour, want: 2 * time.Hour,
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tc := newTestCA(t, caOptions{cfg: tt.cfg, policy: tt.policy})
			issued, err := tc.ca.SignWorkload(context.Background(), workloadReq(t, keyP256))
			if tt.ttl != 0 {
				req := workloadReq(t, keyP256)
				req.TTL = tt.ttl
				issued, err = tc.ca.SignWorkload(context.Background(), req)
			}
			if tt.wantErr != nil {
				require.ErrorIs(t, err, tt.wantErr)
				require.Nil(t, issued)
				if tt.ttl != 0 {
					require.Len(t, tc.rec.Records(), 1, "only the default request was recorded")
				}
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.clock.Now().Add(tt.want), issued.Leaf().NotAfter)
		})
	}
}

// A leaf never outlives its intermediate: with a 1-minute intermediate, a
// 1-hour leaf ends with the intermediate and still verifies.
func TestSignWorkloadCappedByIntermediate(t *testing.T) {
	tc := newTestCA(t, caOptions{authTTL: time.Minute})
	x, err := tc.auth.Current()
	require.NoError(t, err)
	tc.clock.Advance(20 * time.Second)
	issued, err := tc.ca.SignWorkload(context.Background(), workloadReq(t, keyP256))
	require.NoError(t, err)
	require.Equal(t, x.Certificate.NotAfter, issued.Leaf().NotAfter)
	require.Equal(t, tc.clock.Now().Add(40*time.Second), issued.Leaf().NotAfter)
	tc.verify(t, issued.Chain)
	require.Equal(t, issued.Leaf().NotAfter, tc.rec.Records()[0].NotAfter)
}

func TestSignWorkloadRecorderFails(t *testing.T) {
	tc := newTestCA(t, caOptions{})
	storeDown := errors.New("store down")
	tc.rec.Fail(storeDown)
	issued, err := tc.ca.SignWorkload(context.Background(), workloadReq(t, keyP256))
	require.ErrorIs(t, err, storeDown)
	require.ErrorContains(t, err, "issue spiffe://")
	require.Nil(t, issued)
	require.Empty(t, tc.rec.Records())
}

func TestSignPassesContextToRecorder(t *testing.T) {
	type key struct{}
	tc := newTestCA(t, caOptions{})
	ctx := context.WithValue(context.Background(), key{}, "request-1")
	_, err := tc.ca.SignWorkload(ctx, workloadReq(t, keyP256))
	require.NoError(t, err)
	require.Equal(t, "request-1", tc.rec.Contexts()[0].Value(key{}))
}

func TestSignWorkloadRefused(t *testing.T) {
	deny := Policy{
		DenyIdentities: []spiffeid.ID{spiffeid.RequireFromString(workloadURI("default", "api"))},
		Rules:          []Rule{{Namespace: "web", ServiceAccount: "*", DNSNames: []string{"web.example.org"}, IPAddresses: []string{"10.1.2.3"}}},
	}
	for _, tt := range []struct {
		name    string
		subject Subject
		csr     func(t *testing.T) []byte
		wantErr error
	}{
		{name: "denied identity", subject: Subject{Namespace: "default", ServiceAccount: "api"}, wantErr: ErrPermissionDenied},
		{name: "bad namespace", subject: Subject{Namespace: "Default", ServiceAccount: "api"}, wantErr: ErrInvalidRequest},
		{name: "traversal", subject: Subject{Namespace: "default", ServiceAccount: "../api"}, wantErr: ErrInvalidRequest},
		{name: "empty subject", wantErr: ErrInvalidRequest},
		{
			name: "other identity in CSR", subject: Subject{Namespace: "web", ServiceAccount: "front"},
			csr:     func(t *testing.T) []byte { return csrFor(t, keyP256, withURIs(workloadURI("default", "api"))) },
			wantErr: ErrPermissionDenied,
		},
		{
			name: "DNS not granted", subject: Subject{Namespace: "other", ServiceAccount: "front"},
			csr:     func(t *testing.T) []byte { return csrFor(t, keyP256, withDNS("web.example.org")) },
			wantErr: ErrPermissionDenied,
		},
		{
			name: "CA:true", subject: Subject{Namespace: "web", ServiceAccount: "front"},
			csr:     func(t *testing.T) []byte { return csrFor(t, keyP256, withExt(oidExtBasicConstraints, true, bcCATrue)) },
			wantErr: ErrInvalidCSR,
		},
		{
			name: "bad signature", subject: Subject{Namespace: "web", ServiceAccount: "front"},
			csr:     func(t *testing.T) []byte { return breakSignature(csrFor(t, keyP256)) },
			wantErr: ErrInvalidCSR,
		},
		{
			name: "small RSA key", subject: Subject{Namespace: "web", ServiceAccount: "front"},
			csr:     func(t *testing.T) []byte { return csrFor(t, keyRSA1024) },
			wantErr: ErrInvalidCSR,
		},
		{
			name: "PEM instead of DER", subject: Subject{Namespace: "web", ServiceAccount: "front"},
			csr:     func(t *testing.T) []byte { return []byte("-----BEGIN CERTIFICATE REQUEST-----\n") },
			wantErr: ErrInvalidCSR,
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tc := newTestCA(t, caOptions{policy: deny})
			der := csrFor(t, keyP256)
			if tt.csr != nil {
				der = tt.csr(t)
			}
			issued, err := tc.ca.SignWorkload(context.Background(), WorkloadRequest{Subject: tt.subject, CSR: der})
			require.ErrorIs(t, err, tt.wantErr)
			require.Nil(t, issued)
			require.Empty(t, tc.rec.Records())
		})
	}
}

func TestSignWorkloadGrantedSANs(t *testing.T) {
	policy := Policy{Rules: []Rule{{
		Namespace: "web", ServiceAccount: "front",
		DNSNames: []string{"web.example.org", "front.web.svc"}, IPAddresses: []string{"10.1.2.3", "2001:db8::7"},
	}}}
	tc := newTestCA(t, caOptions{policy: policy})
	issued, err := tc.ca.SignWorkload(context.Background(), WorkloadRequest{
		Subject: Subject{Namespace: "web", ServiceAccount: "front"},
		CSR:     csrFor(t, keyP256, withDNS("web.example.org"), withIPs("2001:db8::7")),
	})
	require.NoError(t, err)
	leaf := issued.Leaf()
	require.Equal(t, []string{"web.example.org"}, leaf.DNSNames)
	require.Len(t, leaf.IPAddresses, 1)
	require.True(t, leaf.IPAddresses[0].Equal(net.ParseIP("2001:db8::7")))
	require.Len(t, leaf.URIs, 1)
	require.Equal(t, workloadURI("web", "front"), tc.verify(t, issued.Chain).String())
}

func TestSignAgent(t *testing.T) {
	for _, tt := range []struct {
		name    string
		cfg     func(*Config)
		policy  Policy
		subject Subject
		csr     func(t *testing.T) []byte
		wantTTL time.Duration
		wantErr error
	}{
		{name: "default TTL", subject: Subject{Cluster: "prod", NodeName: "node-1"}, wantTTL: time.Hour},
		{name: "configured TTL", cfg: func(c *Config) { c.AgentTTL = 30 * time.Minute }, subject: Subject{Cluster: "prod", NodeName: "node-1"}, wantTTL: 30 * time.Minute},
		{
			name: "agent TTL is not limited by the workload maximum", cfg: func(c *Config) { c.AgentTTL = 3 * time.Hour; c.MaxTTL = 2 * time.Hour; c.DefaultTTL = time.Hour },
			subject: Subject{Cluster: "prod", NodeName: "node-1"}, wantTTL: 3 * time.Hour,
		},
		{
			name: "own URI SAN", subject: Subject{Cluster: "prod", NodeName: "node-1"}, wantTTL: time.Hour,
			csr: func(t *testing.T) []byte {
				return csrFor(t, keyP256, withURIs("spiffe://example.org/lanyard/agent/prod/node-1"))
			},
		},
		{
			name: "denied agent", subject: Subject{Cluster: "prod", NodeName: "node-1"},
			policy:  Policy{DenyAgents: []spiffeid.ID{spiffeid.RequireFromString("spiffe://example.org/lanyard/agent/prod/node-1")}},
			wantErr: ErrPermissionDenied,
		},
		{name: "no cluster", subject: Subject{NodeName: "node-1"}, wantErr: ErrInvalidRequest},
		{name: "no node", subject: Subject{Cluster: "prod"}, wantErr: ErrInvalidRequest},
		{name: "bad node", subject: Subject{Cluster: "prod", NodeName: "../x"}, wantErr: ErrInvalidRequest},
		{
			name: "other node's URI", subject: Subject{Cluster: "prod", NodeName: "node-1"},
			csr: func(t *testing.T) []byte {
				return csrFor(t, keyP256, withURIs("spiffe://example.org/lanyard/agent/prod/node-2"))
			},
			wantErr: ErrPermissionDenied,
		},
		{
			name: "workload URI", subject: Subject{Cluster: "prod", NodeName: "node-1"},
			csr:     func(t *testing.T) []byte { return csrFor(t, keyP256, withURIs(workloadURI("default", "api"))) },
			wantErr: ErrPermissionDenied,
		},
		{
			name: "DNS SAN", subject: Subject{Cluster: "prod", NodeName: "node-1"},
			csr:     func(t *testing.T) []byte { return csrFor(t, keyP256, withDNS("node-1")) },
			wantErr: ErrPermissionDenied,
		},
		{
			name: "bad CSR", subject: Subject{Cluster: "prod", NodeName: "node-1"},
			csr:     func(t *testing.T) []byte { return csrFor(t, keyP521) },
			wantErr: ErrInvalidCSR,
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tc := newTestCA(t, caOptions{cfg: tt.cfg, policy: tt.policy})
			der := csrFor(t, keyP256)
			if tt.csr != nil {
				der = tt.csr(t)
			}
			issued, err := tc.ca.SignAgent(context.Background(), AgentRequest{Subject: tt.subject, CSR: der, Caller: "token"})
			if tt.wantErr != nil {
				require.ErrorIs(t, err, tt.wantErr)
				require.Nil(t, issued)
				require.Empty(t, tc.rec.Records())
				return
			}
			require.NoError(t, err)
			want := "spiffe://example.org/lanyard/agent/prod/node-1"
			require.Equal(t, want, issued.ID.String())
			require.Equal(t, want, tc.verify(t, issued.Chain).String())
			require.Equal(t, tc.clock.Now().Add(tt.wantTTL), issued.Leaf().NotAfter)
			require.False(t, issued.Leaf().IsCA)
			recs := tc.rec.Records()
			require.Len(t, recs, 1)
			require.Equal(t, KindAgent, recs[0].Kind)
			require.Equal(t, "prod", recs[0].Cluster)
			require.Equal(t, "node-1", recs[0].NodeName)
			require.Equal(t, "token", recs[0].Caller)
			require.Equal(t, want, recs[0].SPIFFEID)
		})
	}
}

func TestSignServing(t *testing.T) {
	tc := newTestCA(t, caOptions{})
	key := testKey(t, keyP256)
	ips := []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")}
	issued, err := tc.ca.SignServing(context.Background(), key.Public(), []string{"lanyard-ca.lanyard.svc", "localhost"}, ips, 6*time.Hour)
	require.NoError(t, err)
	leaf := issued.Leaf()
	require.Equal(t, ServingID(testTD), issued.ID)
	require.Equal(t, []string{"lanyard-ca.lanyard.svc", "localhost"}, leaf.DNSNames)
	require.Len(t, leaf.IPAddresses, 2)
	require.True(t, leaf.IPAddresses[0].Equal(ips[0]))
	require.True(t, leaf.IPAddresses[1].Equal(ips[1]))
	require.Equal(t, tc.clock.Now().Add(6*time.Hour), leaf.NotAfter)
	require.Equal(t, ServingID(testTD), tc.verify(t, issued.Chain))
	require.NoError(t, leaf.VerifyHostname("localhost"))
	require.NoError(t, leaf.VerifyHostname("127.0.0.1"))

	recs := tc.rec.Records()
	require.Len(t, recs, 1)
	require.Equal(t, KindServing, recs[0].Kind)
	require.Equal(t, "self", recs[0].Caller)
	require.Equal(t, ServingID(testTD).String(), recs[0].SPIFFEID)
}

func TestSignServingUnsupportedKey(t *testing.T) {
	tc := newTestCA(t, caOptions{})
	_, err := tc.ca.SignServing(context.Background(), "not a key", nil, nil, time.Hour)
	require.Error(t, err)
	require.Empty(t, tc.rec.Records())
}

func TestSignNotReady(t *testing.T) {
	t.Run("before prepare", func(t *testing.T) {
		tc := newTestCA(t, caOptions{noPrepare: true})
		_, err := tc.ca.SignWorkload(context.Background(), workloadReq(t, keyP256))
		require.ErrorIs(t, err, ErrNotReady)
		_, err = tc.ca.SignAgent(context.Background(), AgentRequest{Subject: Subject{Cluster: "c", NodeName: "n"}, CSR: csrFor(t, keyP256)})
		require.ErrorIs(t, err, ErrNotReady)
		_, err = tc.ca.SignServing(context.Background(), testKey(t, keyP256).Public(), nil, nil, time.Hour)
		require.ErrorIs(t, err, ErrNotReady)
		require.Empty(t, tc.rec.Records())
	})
	t.Run("intermediate expired", func(t *testing.T) {
		tc := newTestCA(t, caOptions{authTTL: time.Minute})
		tc.clock.Advance(time.Minute)
		_, err := tc.ca.SignWorkload(context.Background(), workloadReq(t, keyP256))
		require.ErrorIs(t, err, ErrNotReady)
		require.Empty(t, tc.rec.Records())
	})
}

// TestSignConcurrent signs from many goroutines (for the race detector)
// and checks every serial is unique and recorded.
func TestSignConcurrent(t *testing.T) {
	tc := newTestCA(t, caOptions{})
	const n = 32
	serials := make(chan string, n)
	reqs := make([]WorkloadRequest, n)
	for i := range reqs {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		require.NoError(t, err)
		reqs[i] = workloadReq(t, keyP256)
		reqs[i].CSR = makeCSR(t, key)
	}
	var wg sync.WaitGroup
	for _, req := range reqs {
		wg.Go(func() {
			issued, err := tc.ca.SignWorkload(context.Background(), req)
			if err != nil {
				t.Error(err)
				return
			}
			serials <- issued.Serial
		})
	}
	wg.Wait()
	close(serials)
	seen := map[string]bool{}
	for s := range serials {
		require.False(t, seen[s], "duplicate serial %s", s)
		seen[s] = true
	}
	require.Len(t, seen, n)
	require.Len(t, tc.rec.Records(), n)
}
