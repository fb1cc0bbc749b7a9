package agent

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/lanyard-id/lanyard/ca"
	"github.com/lanyard-id/lanyard/ca/catest"
	"github.com/lanyard-id/lanyard/internal/clocktest"
	cav1 "github.com/lanyard-id/lanyard/proto/lanyard/ca/v1"
)

const agentToken = "agent-token"

var agentSubject = ca.Subject{Cluster: "c1", NodeName: "node-1", Namespace: "lanyard", ServiceAccount: "agent", PodName: "agent-x", PodUID: "uid-1"}

// fakeCA is a small CAService on the real issuing pipeline.
type fakeCA struct {
	cav1.UnimplementedCAServiceServer
	tca    *catest.CA
	signer *fakeSigner

	mu      sync.Mutex
	attests int
	peers   []spiffeid.ID      // mTLS peers of BatchSignSVIDs
	states  []*cav1.AgentState // what the agent reported, per call
	bundle  *cav1.Bundle
	changed chan struct{}
}

func newFakeCA(tca *catest.CA) *fakeCA {
	return &fakeCA{
		tca: tca, signer: newFakeSigner(tca, testTokens), changed: make(chan struct{}),
		bundle: bundleProtoOf(tca.Bundle()),
	}
}

func bundleProtoOf(b *x509bundle.Bundle) *cav1.Bundle {
	p := &cav1.Bundle{TrustDomain: b.TrustDomain().Name()}
	for _, c := range b.X509Authorities() {
		p.X509Authorities = append(p.X509Authorities, c.Raw)
	}
	return p
}

func (f *fakeCA) AttestAgent(ctx context.Context, req *cav1.AttestAgentRequest) (*cav1.AttestAgentResponse, error) {
	f.mu.Lock()
	f.attests++
	f.states = append(f.states, req.GetAgentState())
	b := f.bundle
	f.mu.Unlock()
	if req.GetToken() != agentToken {
		return nil, status.Error(codes.Unauthenticated, "bad token")
	}
	issued, err := f.tca.CA.SignAgent(ctx, ca.AgentRequest{Subject: agentSubject, CSR: req.GetCsr(), Caller: "token"})
	if err != nil {
		return nil, statusOf(err).Err()
	}
	return &cav1.AttestAgentResponse{Svid: svidProtoOf(issued), Bundle: b}, nil
}

func (f *fakeCA) BatchSignSVIDs(ctx context.Context, req *cav1.BatchSignSVIDsRequest) (*cav1.BatchSignSVIDsResponse, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil, status.Error(codes.Unauthenticated, "no peer")
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 {
		return nil, status.Error(codes.Unauthenticated, "call with the agent SVID")
	}
	id, err := x509svid.IDFromCert(info.State.VerifiedChains[0][0])
	if err != nil {
		return nil, status.Error(codes.PermissionDenied, "no SPIFFE ID")
	}
	f.mu.Lock()
	f.peers = append(f.peers, id)
	f.states = append(f.states, req.GetAgentState())
	f.mu.Unlock()
	results, err := f.signer.BatchSign(ctx, req.GetRequests())
	if err != nil {
		return nil, err
	}
	return &cav1.BatchSignSVIDsResponse{Results: results}, nil
}

func (f *fakeCA) WatchBundle(_ *cav1.WatchBundleRequest, stream cav1.CAService_WatchBundleServer) error {
	for {
		f.mu.Lock()
		b, changed := f.bundle, f.changed
		f.mu.Unlock()
		if err := stream.Send(&cav1.WatchBundleResponse{Bundle: b}); err != nil {
			return err
		}
		select {
		case <-stream.Context().Done():
			return nil
		case <-changed:
		}
	}
}

func (f *fakeCA) push(b *cav1.Bundle) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.bundle = b
	close(f.changed)
	f.changed = make(chan struct{})
}

func (f *fakeCA) counts() (attests int, peers []spiffeid.ID) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.attests, append([]spiffeid.ID(nil), f.peers...)
}

// serveFakeCA serves impl over TLS with cert on addr ("127.0.0.1:0" for a
// new port), accepting client certificates that chain to roots. stop ends
// it (idempotent).
func serveFakeCA(t *testing.T, addr string, cert tls.Certificate, roots []*x509.Certificate, impl cav1.CAServiceServer) (string, func()) {
	t.Helper()
	var lis net.Listener
	var err error
	require.Eventually(t, func() bool { lis, err = net.Listen("tcp", addr); return err == nil }, 5*time.Second, 20*time.Millisecond)
	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{
		MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert},
		ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: pool,
	})))
	cav1.RegisterCAServiceServer(srv, impl)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			srv.Stop()
			<-done
		})
	}
	t.Cleanup(stop)
	return lis.Addr().String(), stop
}

func tlsCert(key *ecdsa.PrivateKey, chain []*x509.Certificate) tls.Certificate {
	tc := tls.Certificate{PrivateKey: key, Leaf: chain[0]}
	for _, c := range chain {
		tc.Certificate = append(tc.Certificate, c.Raw)
	}
	return tc
}

// servingCert is the CA's serving certificate: spiffe://<td>/lanyard/ca.
func servingCert(t *testing.T, tca *catest.CA) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	issued, err := tca.CA.SignServing(context.Background(), key.Public(), []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)}, time.Hour)
	require.NoError(t, err)
	require.Equal(t, ca.ServingID(testTD), issued.ID)
	return tlsCert(key, issued.Chain)
}

// workloadCert is a valid SVID of the trust domain that is not the CA's.
func workloadCert(t *testing.T, tca *catest.CA) tls.Certificate {
	t.Helper()
	key, csr, err := newCSR(workloadID("shop", "api"))
	require.NoError(t, err)
	issued, err := tca.CA.SignWorkload(context.Background(), ca.WorkloadRequest{
		Subject: ca.Subject{Namespace: "shop", ServiceAccount: "api"}, CSR: csr, Caller: "test",
	})
	require.NoError(t, err)
	return tlsCert(key, issued.Chain)
}

func newTestClient(t *testing.T, addr string, bundle *x509bundle.Bundle, token func() (string, error), mod ...func(*ClientConfig)) *Client {
	t.Helper()
	if token == nil {
		token = func() (string, error) { return agentToken, nil }
	}
	cfg := ClientConfig{
		Addr: addr, TrustDomain: testTD, Bundle: bundle, Token: token, Cluster: "c1",
		ReconnectMaxDelay: 200 * time.Millisecond,
	}
	for _, f := range mod {
		f(&cfg)
	}
	c, err := NewClient(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestClientAttestThenBatchSignOverMTLS(t *testing.T) {
	tca := newTestCA(t, nil, nil)
	srv := newFakeCA(tca)
	addr, _ := serveFakeCA(t, "127.0.0.1:0", servingCert(t, tca), tca.Bundle().X509Authorities(), srv)
	// The default reconnect backoff: a failed handshake is not retried
	// for about a second unless Attest resets it.
	c := newTestClient(t, addr, tca.Bundle(), nil, func(cfg *ClientConfig) { cfg.ReconnectMaxDelay = 0 })
	ctx := context.Background()

	require.Nil(t, c.AgentSVID())
	_, err := c.GetX509SVID()
	require.Error(t, err)
	_, err = c.BatchSign(ctx, []*cav1.SVIDRequest{{Id: "0"}})
	require.Error(t, err, "no mTLS call before attestation")
	require.Equal(t, codes.Unavailable, status.Code(err))

	require.NoError(t, c.Attest(ctx))
	agentID, err := ca.AgentID(testTD, agentSubject.Cluster, agentSubject.NodeName)
	require.NoError(t, err)
	requireValidSVID(t, c.AgentSVID(), agentID, tca.Bundle(), time.Now())

	key, csr, err := newCSR(workloadID("shop", "api"))
	require.NoError(t, err)
	var results []*cav1.SVIDResult
	require.Eventually(t, func() bool {
		results, err = c.BatchSign(ctx, []*cav1.SVIDRequest{
			{Id: "0", Csr: csr, Caller: &cav1.SVIDRequest_Attested{Attested: &cav1.AttestedWorkload{Attestor: "unix", Namespace: "shop", ServiceAccount: "api"}}},
			{Id: "1", Csr: csr, Caller: &cav1.SVIDRequest_Token{Token: "forged"}},
		})
		return err == nil
	}, 500*time.Millisecond, 10*time.Millisecond, "the mTLS connection is retried at once after attestation")
	require.Len(t, results, 2)
	require.Zero(t, results[0].GetCode())
	s, err := svidFromProto(results[0].GetSvid(), key)
	require.NoError(t, err)
	requireValidSVID(t, s, workloadID("shop", "api"), tca.Bundle(), time.Now())
	require.Equal(t, codes.Unauthenticated, codes.Code(results[1].GetCode()))

	_, peers := srv.counts()
	require.NotEmpty(t, peers)
	for _, p := range peers {
		require.Equal(t, agentID, p, "the CA sees the agent SVID as the client certificate")
	}
}

func TestClientAsManagerSigner(t *testing.T) {
	tca := newTestCA(t, nil, nil)
	srv := newFakeCA(tca)
	addr, _ := serveFakeCA(t, "127.0.0.1:0", servingCert(t, tca), tca.Bundle().X509Authorities(), srv)
	c := newTestClient(t, addr, tca.Bundle(), nil)
	require.NoError(t, c.Attest(context.Background()))
	m := newTestManager(t, tca, c, nil)
	for _, w := range []Workload{attestedWorkload("shop", "api"), tokenWorkload("token-db", "shop", "db")} {
		sub, err := m.Subscribe(context.Background(), w)
		require.NoError(t, err)
		defer sub.Close()
		requireValidSVID(t, waitSVID(t, sub, nil, 5*time.Second), w.ID, m.Bundles(), time.Now())
	}
}

func TestClientAttestRefusals(t *testing.T) {
	tca := newTestCA(t, nil, nil)
	stranger := newTestCA(t, nil, nil) // same trust domain name, another root
	for _, tt := range []struct {
		name    string
		cert    func(t *testing.T) tls.Certificate
		token   func() (string, error)
		reached bool // the call reaches the server
		code    codes.Code
	}{
		{name: "server is a workload, not the CA", cert: func(t *testing.T) tls.Certificate { return workloadCert(t, tca) }},
		{name: "server chains to an unknown root", cert: func(t *testing.T) tls.Certificate { return servingCert(t, stranger) }},
		{name: "token refused", cert: func(t *testing.T) tls.Certificate { return servingCert(t, tca) },
			token: func() (string, error) { return "nope", nil }, reached: true, code: codes.Unauthenticated},
		{name: "token unreadable", cert: func(t *testing.T) tls.Certificate { return servingCert(t, tca) },
			token: func() (string, error) { return "", errors.New("no such file") }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := newFakeCA(tca)
			addr, _ := serveFakeCA(t, "127.0.0.1:0", tt.cert(t), tca.Bundle().X509Authorities(), srv)
			c := newTestClient(t, addr, tca.Bundle(), tt.token)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			err := c.Attest(ctx)
			require.Error(t, err)
			require.Nil(t, c.AgentSVID())
			attests, _ := srv.counts()
			if tt.reached {
				require.Equal(t, 1, attests)
				require.Equal(t, tt.code, status.Code(err))
			} else {
				require.Zero(t, attests, "the token went to a server that is not the CA")
			}
		})
	}
}

func TestClientWatchBundle(t *testing.T) {
	tca := newTestCA(t, nil, nil)
	srv := newFakeCA(tca)
	cert := servingCert(t, tca)
	roots := tca.Bundle().X509Authorities()
	addr, stop := serveFakeCA(t, "127.0.0.1:0", cert, roots, srv)
	c := newTestClient(t, addr, tca.Bundle(), nil)
	require.NoError(t, c.Attest(context.Background()))

	bundles := make(chan *x509bundle.Bundle, 16)
	var connects atomic.Int32
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		assert.NoError(t, c.RunBundle(ctx, func(b *x509bundle.Bundle) { bundles <- b }, func() { connects.Add(1) }))
	}()
	defer func() { cancel(); <-done }()
	next := func() *x509bundle.Bundle {
		t.Helper()
		select {
		case b := <-bundles:
			return b
		case <-time.After(5 * time.Second):
			t.Fatal("no bundle")
			return nil
		}
	}

	require.True(t, next().Equal(tca.Bundle()))
	require.EqualValues(t, 1, connects.Load())

	// A new root joins the bundle: pushed at once.
	extra := selfSignedCert(t)
	grown := x509bundle.FromX509Authorities(testTD, append(roots, extra))
	srv.push(bundleProtoOf(grown))
	require.True(t, next().Equal(grown))
	require.True(t, c.Bundle().Equal(grown))

	// A bundle of another trust domain never replaces ours.
	srv.push(bundleProtoOf(x509bundle.FromX509Authorities(spiffeid.RequireTrustDomainFromString("other.example"), []*x509.Certificate{extra})))
	select {
	case b := <-bundles:
		t.Fatalf("foreign bundle delivered: %s", b.TrustDomain())
	case <-time.After(200 * time.Millisecond):
	}
	require.True(t, c.Bundle().Equal(grown))
	srv.push(bundleProtoOf(grown))
	require.True(t, next().Equal(grown))

	// The CA restarts on the same port: the stream reconnects by itself.
	stop()
	serveFakeCA(t, addr, cert, roots, srv)
	require.Eventually(t, func() bool { return connects.Load() == 2 }, 10*time.Second, 10*time.Millisecond)
	require.True(t, next().Equal(grown))
}

func TestClientRunAgentSVIDRenews(t *testing.T) {
	const agentTTL = 2 * time.Second
	tca := newTestCA(t, nil, func(cfg *ca.Config) { cfg.AgentTTL = agentTTL })
	srv := newFakeCA(tca)
	addr, _ := serveFakeCA(t, "127.0.0.1:0", servingCert(t, tca), tca.Bundle().X509Authorities(), srv)
	c := newTestClient(t, addr, tca.Bundle(), nil)
	require.NoError(t, c.Attest(context.Background()))
	first := c.AgentSVID()
	got := time.Now()
	left := first.Certificates[0].NotAfter.Sub(got) // X.509 times are whole seconds

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); assert.NoError(t, c.RunAgentSVID(ctx)) }()
	defer func() { cancel(); <-done }()

	require.Eventually(t, func() bool { return serialOf(c.AgentSVID()) != serialOf(first) }, 3*agentTTL, 10*time.Millisecond)
	renewedAfter := time.Since(got)
	require.GreaterOrEqual(t, renewedAfter, left*40/100, "renewed long before half-life")
	require.Less(t, renewedAfter, left, "renewed before expiry")
	second := c.AgentSVID()
	requireValidSVID(t, second, first.ID, tca.Bundle(), time.Now())
	require.False(t, first.PrivateKey.Public().(*ecdsa.PublicKey).Equal(second.PrivateKey.Public()))
	attests, _ := srv.counts()
	require.LessOrEqual(t, attests, 3, "no attestation loop")
}

func TestClientRunAgentSVIDBacksOff(t *testing.T) {
	tca := newTestCA(t, nil, nil)
	srv := newFakeCA(tca)
	addr, _ := serveFakeCA(t, "127.0.0.1:0", servingCert(t, tca), tca.Bundle().X509Authorities(), srv)
	var reads atomic.Int32
	c := newTestClient(t, addr, tca.Bundle(), func() (string, error) {
		if reads.Add(1) < 3 {
			return "", errors.New("token not mounted yet")
		}
		return agentToken, nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); assert.NoError(t, c.RunAgentSVID(ctx)) }()
	defer func() { cancel(); <-done }()
	// Attested at once, then after two backoffs (≤ 0.5 s + ≤ 1 s).
	require.Eventually(t, func() bool { return c.AgentSVID() != nil }, 5*time.Second, 10*time.Millisecond)
	require.EqualValues(t, 3, reads.Load())
	attests, _ := srv.counts()
	require.Equal(t, 1, attests)
}

// TestClientRunAgentSVIDFindsReturningCA: an agent that starts while the
// CA is unreachable retries at least every ReconnectMaxDelay, so it attests
// within that long of the CA's return however long the outage lasted (not
// after a backoff grown towards a minute).
func TestClientRunAgentSVIDFindsReturningCA(t *testing.T) {
	tca := newTestCA(t, nil, nil)
	srv := newFakeCA(tca)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := lis.Addr().String()
	require.NoError(t, lis.Close()) // the CA is down
	const reconnect = 200 * time.Millisecond
	log, logs := newTestLogger()
	c := newTestClient(t, addr, tca.Bundle(), nil, func(cfg *ClientConfig) { cfg.ReconnectMaxDelay = reconnect; cfg.Logger = log })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); assert.NoError(t, c.RunAgentSVID(ctx)) }()
	defer func() { cancel(); <-done }()

	// Four failures: an uncapped backoff would now wait 2 to 4 s.
	require.Eventually(t, func() bool { return strings.Count(logs.String(), `msg="renew agent SVID"`) >= 4 },
		10*time.Second, 10*time.Millisecond)
	require.Nil(t, c.AgentSVID())
	serveFakeCA(t, addr, servingCert(t, tca), tca.Bundle().X509Authorities(), srv)
	back := time.Now()
	require.Eventually(t, func() bool { return c.AgentSVID() != nil }, 5*time.Second, 10*time.Millisecond)
	require.Less(t, time.Since(back), reconnect+time.Second, "attested %s after the CA's return", time.Since(back))
}

// TestClientRunAgentSVIDRenewsAfterSuspend: the agent SVID's renewal is a
// wall-clock deadline re-checked at least every wallCheck, so an agent
// whose machine was suspended past the renewal time renews as soon as the
// next check comes, not after the monotonic time that was left.
func TestClientRunAgentSVIDRenewsAfterSuspend(t *testing.T) {
	tca := newTestCA(t, nil, nil)
	srv := newFakeCA(tca)
	addr, _ := serveFakeCA(t, "127.0.0.1:0", servingCert(t, tca), tca.Bundle().X509Authorities(), srv)
	clock := clocktest.New(time.Now())
	c := newTestClient(t, addr, tca.Bundle(), nil, func(cfg *ClientConfig) { cfg.Clock, cfg.After = clock.Now, clock.After })
	require.NoError(t, c.Attest(context.Background()))
	first := c.AgentSVID()
	life := first.Certificates[0].NotAfter.Sub(clock.Now())

	waiting := clock.Waiters()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); assert.NoError(t, c.RunAgentSVID(ctx)) }()
	defer func() { cancel(); <-done }()
	<-waiting
	next, ok := clock.Next()
	require.True(t, ok)
	require.LessOrEqual(t, next, wallCheck, "the deadline is re-checked at least every %s", wallCheck)

	clock.Jump(life * 3 / 4) // suspended past the half-life, not past expiry
	clock.Advance(next)
	require.Eventually(t, func() bool { return serialOf(c.AgentSVID()) != serialOf(first) }, 10*time.Second, 10*time.Millisecond)
	attests, _ := srv.counts()
	require.Equal(t, 2, attests)
}

func TestNewClientValidates(t *testing.T) {
	tca := newTestCA(t, nil, nil)
	tok := func() (string, error) { return "t", nil }
	for _, cfg := range []ClientConfig{
		{TrustDomain: testTD, Bundle: tca.Bundle(), Token: tok},
		{Addr: "127.0.0.1:1", Bundle: tca.Bundle(), Token: tok},
		{Addr: "127.0.0.1:1", TrustDomain: testTD, Token: tok},
		{Addr: "127.0.0.1:1", TrustDomain: testTD, Bundle: tca.Bundle()},
	} {
		_, err := NewClient(cfg)
		require.Error(t, err)
	}
}

func TestClientReportsWhatItHolds(t *testing.T) {
	tca := newTestCA(t, nil, nil)
	srv := newFakeCA(tca)
	srv.bundle.Sequence = 5
	addr, _ := serveFakeCA(t, "127.0.0.1:0", servingCert(t, tca), tca.Bundle().X509Authorities(), srv)
	c := newTestClient(t, addr, tca.Bundle(), nil, func(cfg *ClientConfig) {
		cfg.ReconnectMaxDelay = 0
		cfg.Workloads = func() int { return 7 }
	})
	ctx := context.Background()
	require.NoError(t, c.Attest(ctx))
	require.EqualValues(t, 5, c.BundleSequence(), "the sequence of the bundle in the attestation answer")
	_, csr, err := newCSR(workloadID("shop", "api"))
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		_, err := c.BatchSign(ctx, []*cav1.SVIDRequest{{Id: "0", Csr: csr,
			Caller: &cav1.SVIDRequest_Attested{Attested: &cav1.AttestedWorkload{Attestor: "unix", Namespace: "shop", ServiceAccount: "api"}}}})
		return err == nil
	}, 5*time.Second, 10*time.Millisecond)
	srv.mu.Lock()
	defer srv.mu.Unlock()
	require.GreaterOrEqual(t, len(srv.states), 2)
	require.EqualValues(t, 0, srv.states[0].GetBundleSequence(), "attesting, it holds only the bootstrap bundle")
	require.EqualValues(t, 7, srv.states[0].GetWorkloads())
	last := srv.states[len(srv.states)-1]
	require.EqualValues(t, 5, last.GetBundleSequence())
	require.EqualValues(t, 7, last.GetWorkloads())
}
