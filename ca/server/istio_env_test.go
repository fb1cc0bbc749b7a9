package server

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	istiopb "istio.io/api/security/v1alpha1"

	"github.com/lanyard-id/lanyard/ca"
	"github.com/lanyard-id/lanyard/ca/serving"
	"github.com/lanyard-id/lanyard/ca/tokens"
	"github.com/lanyard-id/lanyard/ca/upstream"
	"github.com/lanyard-id/lanyard/storage"
	"github.com/lanyard-id/lanyard/storage/sqlite"
)

var istioTD = spiffeid.RequireTrustDomainFromString("cluster.local")

// Token issuers of the Istio tests: cluster "dev" (the default) and
// cluster "other", each with its own key. RSA keys are slow to make, so
// they are made once per test binary.
var istioIssuers = sync.OnceValues(func() ([2]*tokens.DevIssuer, error) {
	var out [2]*tokens.DevIssuer
	dir, err := os.MkdirTemp("", "lanyard-istio-test-")
	if err != nil {
		return out, err
	}
	defer os.RemoveAll(dir) // the issuers keep what they need in memory
	for i, name := range []string{"dev", "other"} {
		if out[i], err = tokens.LoadOrCreateDevIssuer(filepath.Join(dir, name), "https://"+name+".lanyard.invalid"); err != nil {
			return out, err
		}
	}
	return out, nil
})

// istioEnv is a CA serving the Istio API over TLS on 127.0.0.1: a real
// pipeline (self-signed root, authority, policy, SQLite store through the
// group-commit writer) with the real JWKS verifier for two clusters.
type istioEnv struct {
	srv    *Server
	auth   *ca.Authority
	store  storage.Store
	client istiopb.IstioCertificateServiceClient
	conn   *grpc.ClientConn
	dev    *tokens.DevIssuer
	other  *tokens.DevIssuer
}

type istioEnvOptions struct {
	istio  IstioConfig
	policy ca.Policy
	maxTTL time.Duration
	// overload: one signing slot and no wait.
	overload bool
	// cache puts the positive token cache in front of the verifiers, as
	// `lanyard ca` does.
	cache bool
	// limits of the gRPC server.
	limits Limits
}

func newIstioEnv(t testing.TB, o istioEnvOptions) *istioEnv {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	iss, err := istioIssuers()
	require.NoError(t, err)
	dir := t.TempDir()
	st, err := sqlite.New(ctx, sqlite.Config{Path: filepath.Join(dir, "lanyard.db")})
	require.NoError(t, err)
	writer, err := storage.NewWriter(storage.WriterConfig{Store: st})
	require.NoError(t, err)
	up, err := upstream.NewSelfSigned(upstream.SelfSignedConfig{Dir: filepath.Join(dir, "root"), TrustDomain: istioTD.Name()})
	require.NoError(t, err)
	auth, err := ca.NewAuthority(ca.AuthorityConfig{TrustDomain: istioTD, Upstream: up, TTL: 72 * time.Hour})
	require.NoError(t, err)
	require.NoError(t, auth.Prepare(ctx))
	issuer, err := ca.New(ca.Config{TrustDomain: istioTD, Keys: auth, Recorder: writer, Policy: o.policy, MaxTTL: o.maxTTL})
	require.NoError(t, err)
	verifiers := map[string]tokens.Verifier{}
	for i, name := range []string{"dev", "other"} {
		jv, err := tokens.NewJWKSVerifier(tokens.JWKSConfig{Cluster: name, Issuer: iss[i].Issuer(), JWKS: iss[i].JWKS()})
		require.NoError(t, err)
		var v tokens.Verifier = jv
		if o.cache {
			v, err = tokens.NewCache(jv, tokens.CacheConfig{})
			require.NoError(t, err)
		}
		verifiers[name] = v
	}
	clusters, err := tokens.NewClusters("dev", verifiers)
	require.NoError(t, err)
	cert, err := serving.New(serving.Config{CA: issuer, Keys: auth, IPs: []net.IP{net.ParseIP("127.0.0.1")}})
	require.NoError(t, err)
	cfg := Config{
		Addr: "127.0.0.1:0", CA: issuer, Authority: auth, Tokens: clusters, Store: st, Serving: cert, Istio: &o.istio, Limits: o.limits,
	}
	if o.overload {
		cfg.MaxInFlight, cfg.OverloadWait = 1, time.Nanosecond
	}
	srv, err := New(cfg)
	require.NoError(t, err)

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return writer.Run(gctx) })
	require.NoError(t, cert.Renew(ctx)) // recorded: after the writer runs
	g.Go(func() error { return srv.Run(gctx) })
	t.Cleanup(func() {
		cancel()
		require.NoError(t, g.Wait())
		require.NoError(t, st.Close())
	})

	pool := x509.NewCertPool()
	for _, r := range auth.Bundle().Roots {
		pool.AddCert(r)
	}
	conn, err := grpc.NewClient(srv.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12,
	})))
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	return &istioEnv{
		srv: srv, auth: auth, store: st, client: istiopb.NewIstioCertificateServiceClient(conn), conn: conn,
		dev: iss[0], other: iss[1],
	}
}

// token mints a token of cluster dev for ns/sa with audience istio-ca,
// changed by mod.
func (e *istioEnv) token(t testing.TB, ns, sa string, mod ...func(*tokens.DevClaims)) string {
	t.Helper()
	c := tokens.DevClaims{Namespace: ns, ServiceAccount: sa, Audiences: []string{DefaultIstioAudience}, PodName: sa + "-0", NodeName: "node-a"}
	for _, m := range mod {
		m(&c)
	}
	tok, err := e.dev.Mint(c)
	require.NoError(t, err)
	return tok
}

// call sends CreateCertificate with the given gRPC metadata pairs.
func (e *istioEnv) call(t testing.TB, req *istiopb.IstioCertificateRequest, md ...string) (*istiopb.IstioCertificateResponse, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if len(md) > 0 {
		ctx = metadata.NewOutgoingContext(ctx, metadata.Pairs(md...))
	}
	return e.client.CreateCertificate(ctx, req)
}

// bearer is the metadata istio-agent sends: authorization and ClusterID.
func bearer(token, cluster string) []string {
	return []string{"authorization", "Bearer " + token, "ClusterID", cluster}
}

var (
	istioKeyOnce sync.Once
	istioKey     crypto.Signer
)

// istioTestKey is one P-256 key shared by the tests' CSRs.
func istioTestKey(t testing.TB) crypto.Signer {
	t.Helper()
	istioKeyOnce.Do(func() {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			panic(err)
		}
		istioKey = k
	})
	return istioKey
}

// istioCSR is a PEM CSR with the given URI SANs (and DNS names, when a
// URI starts with "dns:").
func istioCSR(t testing.TB, sans ...string) string {
	t.Helper()
	tmpl := &x509.CertificateRequest{}
	for _, s := range sans {
		if name, ok := strings.CutPrefix(s, "dns:"); ok {
			tmpl.DNSNames = append(tmpl.DNSNames, name)
			continue
		}
		u, err := url.Parse(s)
		require.NoError(t, err)
		tmpl.URIs = append(tmpl.URIs, u)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, istioTestKey(t))
	require.NoError(t, err)
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

func workloadIDString(ns, sa string) string {
	return fmt.Sprintf("spiffe://%s/ns/%s/sa/%s", istioTD.Name(), ns, sa)
}

// fakePods is a PodLocator over a fixed set of "cluster/node/ns/sa".
type fakePods struct {
	mu   sync.Mutex
	pods map[string]bool
	err  error
}

func newFakePods(keys ...string) *fakePods {
	p := &fakePods{pods: map[string]bool{}}
	for _, k := range keys {
		p.pods[k] = true
	}
	return p
}

func (p *fakePods) PodsOnNode(_ context.Context, cluster, node, ns, sa string) (bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err != nil {
		return false, p.err
	}
	return p.pods[cluster+"/"+node+"/"+ns+"/"+sa], nil
}

func (p *fakePods) fail(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.err = err
}
