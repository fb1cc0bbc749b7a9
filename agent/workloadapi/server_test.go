package workloadapi_test

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	spiffeworkload "github.com/spiffe/go-spiffe/v2/workloadapi"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/lanyard-id/lanyard/agent"
	"github.com/lanyard-id/lanyard/agent/agenttest"
	"github.com/lanyard-id/lanyard/agent/workloadapi"
	"github.com/lanyard-id/lanyard/ca/catest"
)

var (
	webID = spiffeid.RequireFromString("spiffe://cluster.local/ns/shop/sa/web")
	dbID  = spiffeid.RequireFromString("spiffe://cluster.local/ns/shop/sa/db")
)

// env is a server with two workloads: web (uid 0, attested) and db
// (identified by the token dbToken), and a federated trust domain.
type env struct {
	sock            string
	ids             *agenttest.Identities
	web, db         *agenttest.Identity
	ca, partner     *catest.CA
	dbToken         string
	streams, served *fakeMetric
}

func newEnv(t *testing.T, dir string) *env {
	t.Helper()
	e := &env{ca: newCA(t, "cluster.local"), partner: newCA(t, "partner.example"), streams: &fakeMetric{}, served: &fakeMetric{}}
	e.web = agenttest.NewIdentity(e.ca.Issue(t, webID), e.ca.Bundle(), e.partner.Bundle())
	e.db = agenttest.NewIdentity(e.ca.Issue(t, dbID), e.ca.Bundle(), e.partner.Bundle())
	e.ids = agenttest.New(map[spiffeid.ID]*agenttest.Identity{webID: e.web, dbID: e.db})
	e.dbToken = projectedToken(t, "shop", "db")
	e.sock = serve(t, dir, workloadapi.Config{Identifier: identifier(t), Identities: e.ids, Streams: e.streams, SVIDsServed: e.served})
	return e
}

// projectedToken is an (unsigned) projected service-account token; the
// agent reads its claims, only the CA verifies it.
func projectedToken(t *testing.T, ns, sa string) string {
	t.Helper()
	enc := func(v any) string {
		b, err := json.Marshal(v)
		require.NoError(t, err)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	return enc(map[string]string{"alg": "RS256"}) + "." + enc(map[string]any{
		"aud": []string{"lanyard"}, "sub": "system:serviceaccount:" + ns + ":" + sa,
		"kubernetes.io": map[string]any{"namespace": ns, "serviceaccount": map[string]any{"name": sa}},
	}) + ".c2ln"
}

// bearer sends "authorization: Bearer <token>" on every stream, as Envoy's
// file-based call credentials do.
func bearer(token string) grpc.DialOption {
	return grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		return streamer(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token), desc, cc, method, opts...)
	})
}

// requireCount waits for m to reach n: a counter moves after Send
// returns, which may be after the client has the message.
func requireCount(t *testing.T, n int64, m *fakeMetric) {
	t.Helper()
	require.Eventually(t, func() bool { return m.n.Load() == n }, 5*time.Second, time.Millisecond, "want %d, have %d", n, m.n.Load())
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestFetchX509Context(t *testing.T) {
	e := newEnv(t, t.TempDir())
	x509Ctx, err := client(t, e.sock).FetchX509Context(ctxT(t))
	require.NoError(t, err)

	require.Len(t, x509Ctx.SVIDs, 1)
	got := x509Ctx.SVIDs[0]
	want := e.web.Current()
	require.Equal(t, webID, got.ID)
	require.Equal(t, want.Certificates[0].Raw, got.Certificates[0].Raw)
	require.True(t, sameKey(want.PrivateKey, got.PrivateKey), "the workload gets its own key")

	// Own and federated bundles, and the SVID verifies against them.
	require.Equal(t, 2, x509Ctx.Bundles.Len())
	own, ok := x509Ctx.Bundles.Get(td)
	require.True(t, ok)
	require.Equal(t, []*x509.Certificate{e.ca.Bundle().X509Authorities()[0]}, own.X509Authorities())
	fed, ok := x509Ctx.Bundles.Get(e.partner.TrustDomain)
	require.True(t, ok)
	require.Equal(t, []*x509.Certificate{e.partner.Bundle().X509Authorities()[0]}, fed.X509Authorities())
	_, _, err = x509svid.Verify(got.Certificates, x509Ctx.Bundles)
	require.NoError(t, err)

	w := e.ids.Workloads()
	require.Len(t, w, 1)
	require.Equal(t, webID, w[0].ID)
	require.Empty(t, w[0].Token)
	require.Equal(t, "unix", w[0].Attested.Attestor)
	requireCount(t, 1, e.served)
}

func TestFetchX509Bundles(t *testing.T) {
	e := newEnv(t, t.TempDir())
	set, err := client(t, e.sock).FetchX509Bundles(ctxT(t))
	require.NoError(t, err)
	require.Equal(t, 2, set.Len())
	own, ok := set.Get(td)
	require.True(t, ok)
	require.Equal(t, []*x509.Certificate{e.ca.Bundle().X509Authorities()[0]}, own.X509Authorities())
	_, ok = set.Get(e.partner.TrustDomain)
	require.True(t, ok)
	require.Zero(t, e.served.n.Load(), "no SVID left the agent")
}

type watcher struct {
	updates chan *spiffeworkload.X509Context
}

func (w watcher) OnX509ContextUpdate(c *spiffeworkload.X509Context) { w.updates <- c }
func (w watcher) OnX509ContextWatchError(error)                     {}

func TestWatchSeesRotationAndBundleChange(t *testing.T) {
	e := newEnv(t, t.TempDir())
	c := client(t, e.sock)
	ctx, cancel := context.WithCancel(ctxT(t))
	w := watcher{updates: make(chan *spiffeworkload.X509Context, 8)}
	done := make(chan error, 1)
	go func() { done <- c.WatchX509Context(ctx, w) }()
	defer func() { cancel(); <-done }()

	first := <-w.updates
	require.Equal(t, e.web.Current().Certificates[0].Raw, first.DefaultSVID().Certificates[0].Raw)
	require.Equal(t, int64(1), e.streams.n.Load())

	// Rotation: a new certificate and a new key.
	rotated := e.ca.Issue(t, webID)
	e.web.Set(rotated, nil)
	second := <-w.updates
	require.Equal(t, rotated.Certificates[0].Raw, second.DefaultSVID().Certificates[0].Raw)
	require.True(t, sameKey(rotated.PrivateKey, second.DefaultSVID().PrivateKey))

	// Root rotation prepared: the new root joins the bundle.
	next := newCA(t, "cluster.local")
	both := x509bundle.FromX509Authorities(td, []*x509.Certificate{e.ca.Bundle().X509Authorities()[0], next.Bundle().X509Authorities()[0]})
	e.web.Set(rotated, nil, both, e.partner.Bundle())
	third := <-w.updates
	own, _ := third.Bundles.Get(td)
	require.Len(t, own.X509Authorities(), 2)

	// Federation dropped: the next response no longer has it.
	e.web.Set(rotated, nil, both)
	fourth := <-w.updates
	require.Equal(t, 1, fourth.Bundles.Len())
	requireCount(t, 4, e.served)
}

// rawFetch opens FetchX509SVID with a plain gRPC client and the given
// metadata.
func rawFetch(t *testing.T, sock string, md ...string) workload.SpiffeWorkloadAPI_FetchX509SVIDClient {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	stream, err := workload.NewSpiffeWorkloadAPIClient(conn).FetchX509SVID(metadata.AppendToOutgoingContext(ctxT(t), md...), &workload.X509SVIDRequest{})
	require.NoError(t, err)
	return stream
}

func TestUnidentifiedCallerIsDenied(t *testing.T) {
	ids := agenttest.New(nil)
	// An identifier that knows no uid: the test process is not identified.
	sock := serve(t, t.TempDir(), workloadapi.Config{Identifier: noRules(t), Identities: ids})
	c := client(t, sock)
	_, err := c.FetchX509SVID(ctxT(t))
	require.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
	_, err = c.FetchX509Bundles(ctxT(t))
	require.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
	require.Empty(t, ids.Workloads())

	// A malformed token does not identify anyone either.
	_, err = client(t, sock, bearer("not-a-jwt")).FetchX509SVID(ctxT(t))
	require.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
}

func TestOtherUserIsDenied(t *testing.T) {
	if os.Getuid() != 0 {
		t.Fatalf("this test runs a child as uid %d and needs root (uid is %d)", nobody, os.Getuid())
	}
	e := newEnv(t, worldDir(t))
	// Same socket: the mapped user gets its SVID, a second user with no
	// mapping is refused.
	_, err := client(t, e.sock).FetchX509SVID(ctxT(t))
	require.NoError(t, err)
	require.Equal(t, codes.PermissionDenied.String(), runAsNobody(t, e.sock))
}

func TestDeniedByCA(t *testing.T) {
	e := newEnv(t, t.TempDir())
	e.web.Set(nil, fmt.Errorf("%w: service account shop/web may not have an SVID", agent.ErrDenied))
	c := client(t, e.sock)
	_, err := c.FetchX509SVID(ctxT(t))
	require.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
	_, err = c.FetchX509Bundles(ctxT(t))
	require.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)

	// Refused while streaming: the stream ends with PermissionDenied, and
	// the client must stop using its SVID.
	e.web.Set(e.ca.Issue(t, webID), nil)
	stream := rawFetch(t, e.sock, "workload.spiffe.io", "true")
	_, err = stream.Recv()
	require.NoError(t, err)
	e.web.Set(nil, fmt.Errorf("%w: identity revoked", agent.ErrDenied))
	_, err = stream.Recv()
	require.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)

	// A token that stopped working: Unauthenticated, the client reconnects
	// and is identified again with its current token.
	e.web.Set(e.ca.Issue(t, webID), nil)
	stream = rawFetch(t, e.sock, "workload.spiffe.io", "true")
	_, err = stream.Recv()
	require.NoError(t, err)
	e.web.Set(nil, fmt.Errorf("%w: token expired", agent.ErrCredentialExpired))
	_, err = stream.Recv()
	require.Equal(t, codes.Unauthenticated, status.Code(err), "%v", err)
}

func TestPendingSVIDIsAwaited(t *testing.T) {
	e := newEnv(t, t.TempDir())
	e.web.Set(nil, nil) // being fetched from the CA
	c := client(t, e.sock)
	res := make(chan error, 1)
	var got *x509svid.SVID
	go func() {
		var err error
		got, err = c.FetchX509SVID(ctxT(t))
		res <- err
	}()
	// The server looked, found nothing yet, and sent nothing: an empty
	// response would have failed the client ("no SVIDs in response").
	<-e.web.SVIDCalls()
	svid := e.ca.Issue(t, webID)
	e.web.Set(svid, nil)
	require.NoError(t, <-res)
	require.Equal(t, svid.Certificates[0].Raw, got.Certificates[0].Raw)
}

func TestWorkloadsOnlyGetTheirOwnKey(t *testing.T) {
	e := newEnv(t, t.TempDir())
	webClient := client(t, e.sock)
	dbClient := client(t, e.sock, bearer(e.dbToken))

	var wg sync.WaitGroup
	var webSVID, dbSVID *x509svid.SVID
	var webErr, dbErr error
	for range 5 {
		wg.Add(2)
		go func() { defer wg.Done(); webSVID, webErr = webClient.FetchX509SVID(ctxT(t)) }()
		go func() { defer wg.Done(); dbSVID, dbErr = dbClient.FetchX509SVID(ctxT(t)) }()
		wg.Wait()
		require.NoError(t, webErr)
		require.NoError(t, dbErr)
		require.Equal(t, webID, webSVID.ID)
		require.Equal(t, dbID, dbSVID.ID)
		require.True(t, sameKey(e.web.Current().PrivateKey, webSVID.PrivateKey))
		require.True(t, sameKey(e.db.Current().PrivateKey, dbSVID.PrivateKey))
		require.False(t, sameKey(webSVID.PrivateKey, dbSVID.PrivateKey))
	}
	for _, w := range e.ids.Workloads() {
		switch w.ID {
		case webID:
			require.Empty(t, w.Token)
			require.NotNil(t, w.Attested)
		case dbID:
			require.Equal(t, e.dbToken, w.Token, "the token is handed to the manager for the CA")
			require.Nil(t, w.Attested)
		default:
			t.Fatalf("unexpected workload %s", w.ID)
		}
	}
}

func TestStreamLifecycle(t *testing.T) {
	e := newEnv(t, t.TempDir())
	stream := rawFetch(t, e.sock, "workload.spiffe.io", "true")
	first, err := stream.Recv()
	require.NoError(t, err)
	require.Equal(t, webID.String(), first.Svids[0].SpiffeId)
	require.Equal(t, int64(1), e.streams.n.Load())

	// A wake-up with nothing changed sends nothing: once the server has
	// looked again (an SVID call), the next response is the rotation.
	select {
	case <-e.web.SVIDCalls(): // the call that built the first response
	default:
	}
	e.web.Notify()
	<-e.web.SVIDCalls()
	e.web.Set(e.ca.Issue(t, webID), nil)
	second, err := stream.Recv()
	require.NoError(t, err)
	require.NotEqual(t, first.Svids[0].X509Svid, second.Svids[0].X509Svid)
	requireCount(t, 2, e.served)

	// The agent stops: the stream ends with Unavailable, and the
	// subscription is gone.
	e.web.Shutdown()
	_, err = stream.Recv()
	require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
	require.Eventually(t, func() bool { return e.streams.n.Load() == 0 }, 5*time.Second, 5*time.Millisecond)
}

func TestClientGoneClosesSubscription(t *testing.T) {
	e := newEnv(t, t.TempDir())
	ctx, cancel := context.WithCancel(ctxT(t))
	conn, err := grpc.NewClient("unix://"+e.sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer conn.Close()
	stream, err := workload.NewSpiffeWorkloadAPIClient(conn).FetchX509Bundles(
		metadata.AppendToOutgoingContext(ctx, "workload.spiffe.io", "true"), &workload.X509BundlesRequest{})
	require.NoError(t, err)
	resp, err := stream.Recv()
	require.NoError(t, err)
	require.Contains(t, resp.Bundles, "spiffe://cluster.local")
	require.Contains(t, resp.Bundles, "spiffe://partner.example")
	require.Equal(t, 1, e.web.Open())
	cancel()
	require.Eventually(t, func() bool { return e.web.Open() == 0 && e.streams.n.Load() == 0 }, 5*time.Second, 5*time.Millisecond)
}

func TestNewValidates(t *testing.T) {
	_, err := workloadapi.New(workloadapi.Config{})
	require.Error(t, err)
	_, err = workloadapi.New(workloadapi.Config{Identifier: noRules(t)})
	require.Error(t, err)
}
