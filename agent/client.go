package agent

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/lanyard-id/lanyard/ca"
	"github.com/lanyard-id/lanyard/internal/backoff"
	cav1 "github.com/lanyard-id/lanyard/proto/lanyard/ca/v1"
)

// ClientConfig configures the agent's connection to the CA.
type ClientConfig struct {
	// Addr is the CA's gRPC target: "dns:///<headless service>:8443" to
	// balance over every replica (round robin, retrying an UNAVAILABLE call
	// on another), "host:port", or a comma-separated list of host:port.
	Addr        string
	TrustDomain spiffeid.TrustDomain
	// Bundle is the bootstrap trust bundle the CA's serving certificate is
	// checked against until WatchBundle delivers the current one.
	Bundle *x509bundle.Bundle
	// ServerID is the SPIFFE ID the CA must present (default
	// spiffe://<td>/lanyard/ca).
	ServerID spiffeid.ID
	// Token returns the agent's own projected token (audience "lanyard"),
	// read afresh for every attestation.
	Token func() (string, error)
	// Cluster names the cluster whose issuer verifies the agent's token
	// ("" means the CA's default).
	Cluster string
	// ReconnectMaxDelay bounds gRPC's reconnect backoff (default 5s), so a
	// CA that comes back is noticed within seconds.
	ReconnectMaxDelay time.Duration
	// Clock is the wall clock the agent SVID's renewal is scheduled on
	// (default: without monotonic reading, as for the Manager). After
	// waits as time.After does (the default); tests inject both.
	Clock  func() time.Time
	After  func(time.Duration) <-chan time.Time
	Logger *slog.Logger
	// Workloads, when set, says how many workload SVIDs the agent holds;
	// it is reported to the CA on each call with the bundle sequence.
	Workloads func() int
}

// Client talks to the CA: it attests the agent, keeps the agent SVID and
// the bundle current, and signs workload CSRs over mTLS with the agent SVID.
type Client struct {
	cfg    ClientConfig
	svid   atomic.Pointer[x509svid.SVID]
	bundle atomic.Pointer[x509bundle.Bundle]
	// bundleSeq is the sequence of the bundle last received from the CA.
	bundleSeq atomic.Int64
	conn      *grpc.ClientConn
	api       cav1.CAServiceClient
}

// NewClient validates cfg and prepares the mTLS connection; it does not
// dial until the first call. Call Attest before any other call.
func NewClient(cfg ClientConfig) (*Client, error) {
	if cfg.Addr == "" || cfg.TrustDomain.IsZero() || cfg.Bundle == nil || cfg.Token == nil {
		return nil, errors.New("ca client: address, trust domain, bootstrap bundle and token source are required")
	}
	if cfg.ServerID.IsZero() {
		cfg.ServerID = ca.ServingID(cfg.TrustDomain)
	}
	if cfg.ReconnectMaxDelay == 0 {
		cfg.ReconnectMaxDelay = 5 * time.Second
	}
	if cfg.Clock == nil {
		cfg.Clock = wallNow
	}
	if cfg.After == nil {
		cfg.After = time.After
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Client{cfg: cfg}
	c.bundle.Store(cfg.Bundle)
	tlsCfg := tlsconfig.MTLSClientConfig(c, c, tlsconfig.AuthorizeID(cfg.ServerID))
	conn, err := c.dial(credentials.NewTLS(tlsCfg))
	if err != nil {
		return nil, fmt.Errorf("ca client: %w", err)
	}
	c.conn, c.api = conn, cav1.NewCAServiceClient(conn)
	return c, nil
}

// dial makes a connection that balances over every CA replica behind
// Addr (see dialTarget).
func (c *Client) dial(creds credentials.TransportCredentials) (*grpc.ClientConn, error) {
	bc := grpcbackoff.DefaultConfig
	bc.MaxDelay = c.cfg.ReconnectMaxDelay
	target, opts := dialTarget(c.cfg.Addr)
	return grpc.NewClient(target, append(opts,
		grpc.WithTransportCredentials(creds),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: bc, MinConnectTimeout: 5 * time.Second}),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second, PermitWithoutStream: true}),
	)...)
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// GetX509SVID returns the agent SVID (x509svid.Source).
func (c *Client) GetX509SVID() (*x509svid.SVID, error) {
	s := c.svid.Load()
	if s == nil {
		return nil, errors.New("agent not attested yet")
	}
	return s, nil
}

// GetX509BundleForTrustDomain returns the current bundle (x509bundle.Source).
func (c *Client) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	b := c.bundle.Load()
	if td != b.TrustDomain() {
		return nil, fmt.Errorf("no bundle for trust domain %s", td)
	}
	return b, nil
}

// Bundle returns the current trust bundle.
func (c *Client) Bundle() *x509bundle.Bundle { return c.bundle.Load() }

// AgentSVID returns the current agent SVID, nil before the first attestation.
func (c *Client) AgentSVID() *x509svid.SVID { return c.svid.Load() }

// Attest proves the agent to the CA with its projected token over
// server-authenticated TLS and stores the agent SVID it gets back.
func (c *Client) Attest(ctx context.Context) error {
	token, err := c.cfg.Token()
	if err != nil {
		return fmt.Errorf("read agent token: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("agent key: %w", err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return fmt.Errorf("agent CSR: %w", err)
	}
	tlsCfg := tlsconfig.TLSClientConfig(c, tlsconfig.AuthorizeID(c.cfg.ServerID))
	conn, err := c.dial(credentials.NewTLS(tlsCfg))
	if err != nil {
		return fmt.Errorf("dial CA: %w", err)
	}
	defer conn.Close()
	resp, err := cav1.NewCAServiceClient(conn).AttestAgent(ctx, &cav1.AttestAgentRequest{
		Token: token, Cluster: c.cfg.Cluster, Csr: csr, AgentState: c.state(),
	})
	if err != nil {
		return fmt.Errorf("attest agent: %w", err)
	}
	svid, err := svidFromProto(resp.GetSvid(), key)
	if err != nil {
		return fmt.Errorf("attest agent: %w", err)
	}
	if na := svid.Certificates[0].NotAfter; !c.cfg.Clock().Before(na) {
		// Clock skew: renewing it at once would loop.
		return fmt.Errorf("attest agent: the CA issued an SVID that expired at %s", na)
	}
	if b, err := bundleFromProto(resp.GetBundle()); err == nil && b.TrustDomain() == c.cfg.TrustDomain {
		c.bundle.Store(b)
		c.bundleSeq.Store(resp.GetBundle().GetSequence())
	}
	c.svid.Store(svid)
	// A handshake that failed before (no or an expired agent SVID) left the
	// mTLS connection backing off; with the new SVID, reconnect now.
	c.conn.ResetConnectBackoff()
	c.cfg.Logger.Info("agent attested", "spiffe_id", svid.ID.String(), "expires", svid.Certificates[0].NotAfter)
	return nil
}

// state is what the agent reports holding on each call.
func (c *Client) state() *cav1.AgentState {
	st := &cav1.AgentState{BundleSequence: c.bundleSeq.Load()}
	if c.cfg.Workloads != nil {
		st.Workloads = int64(c.cfg.Workloads())
	}
	return st
}

// BundleSequence is the sequence of the bundle last received from the CA.
func (c *Client) BundleSequence() int64 { return c.bundleSeq.Load() }

// BatchSign sends one BatchSignSVIDs call over mTLS, with what the agent
// holds.
func (c *Client) BatchSign(ctx context.Context, reqs []*cav1.SVIDRequest) ([]*cav1.SVIDResult, error) {
	resp, err := c.api.BatchSignSVIDs(ctx, &cav1.BatchSignSVIDsRequest{Requests: reqs, AgentState: c.state()})
	if err != nil {
		return nil, err
	}
	if len(resp.GetResults()) != len(reqs) {
		return nil, fmt.Errorf("CA answered %d results for %d requests", len(resp.GetResults()), len(reqs))
	}
	return resp.GetResults(), nil
}

// RunBundle follows the CA's bundle stream until ctx ends, reconnecting
// with backoff, and returns nil then. Each attempt waits for the
// connection to be ready, so the stream is back as soon as the CA is (not
// at the next retry of a loop that polled a failed connection). onBundle
// runs for every bundle received; onConnect runs each time the stream
// (re)connects, which tells the caller the CA is back.
func (c *Client) RunBundle(ctx context.Context, onBundle func(*x509bundle.Bundle), onConnect func()) error {
	failures := 0
	for {
		err := c.followBundle(ctx, onBundle, func() {
			failures = 0
			if onConnect != nil {
				onConnect()
			}
		})
		if ctx.Err() != nil {
			return nil
		}
		failures++
		c.cfg.Logger.Debug("bundle stream ended", "error", err, "failures", failures)
		select {
		case <-ctx.Done():
			return nil
		case <-c.cfg.After(backoff.Exponential(failures, 500*time.Millisecond, c.cfg.ReconnectMaxDelay)):
		}
	}
}

// followBundle is one bundle stream, until it fails.
func (c *Client) followBundle(ctx context.Context, onBundle func(*x509bundle.Bundle), onConnect func()) error {
	stream, err := c.api.WatchBundle(ctx, &cav1.WatchBundleRequest{}, grpc.WaitForReady(true))
	if err != nil {
		return err
	}
	for first := true; ; first = false {
		resp, err := stream.Recv()
		if err != nil {
			return err
		}
		if first {
			onConnect()
		}
		b, err := bundleFromProto(resp.GetBundle())
		if err == nil && b.TrustDomain() != c.cfg.TrustDomain {
			// It would replace the roots the CA is checked against.
			err = fmt.Errorf("bundle of trust domain %s, want %s", b.TrustDomain(), c.cfg.TrustDomain)
		}
		if err != nil {
			c.cfg.Logger.Warn("bad bundle from CA", "error", err)
			continue
		}
		c.bundle.Store(b)
		c.bundleSeq.Store(resp.GetBundle().GetSequence())
		onBundle(b)
	}
}

// RunAgentSVID renews the agent SVID at half-life ± 10 % (and at once when
// it has expired), retrying with backoff, until ctx ends; it returns nil
// then. An SVID present when it starts counts as just received (Attest was
// called before). The deadline is a wall-clock time re-checked at least
// every wallCheck, so an agent waking from a suspend renews at once.
//
// Refusals back off up to a minute. A CA that cannot be reached
// (Unavailable) is tried again at least every ReconnectMaxDelay, as the
// connection is: an agent without a valid SVID (started during an outage,
// or whose SVID expired in one) can do nothing until it attests, and must
// find the CA within seconds of its return however long the outage was.
func (c *Client) RunAgentSVID(ctx context.Context) error {
	failures := 0
	var next time.Time // zero: attest now
	if s := c.svid.Load(); s != nil {
		next = renewalTime(s.Certificates[0], c.cfg.Clock())
	}
	for {
		if wait := next.Sub(c.cfg.Clock()); wait > 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-c.cfg.After(min(wait, wallCheck)):
			}
			continue
		}
		err := c.Attest(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			failures++
			limit := time.Minute
			if status.Code(err) == codes.Unavailable {
				limit = min(limit, c.cfg.ReconnectMaxDelay)
			}
			next = c.cfg.Clock().Add(backoff.Exponential(failures, 500*time.Millisecond, limit))
			c.cfg.Logger.Warn("renew agent SVID", "error", err, "failures", failures)
			continue
		}
		failures = 0
		// From receipt, not NotBefore: the CA backdates it for clock skew.
		next = renewalTime(c.svid.Load().Certificates[0], c.cfg.Clock())
	}
}

func svidFromProto(p *cav1.X509SVID, key crypto.Signer) (*x509svid.SVID, error) {
	if p == nil || len(p.GetCertChain()) == 0 {
		return nil, errors.New("no certificate in answer")
	}
	var der []byte
	for _, c := range p.GetCertChain() {
		der = append(der, c...)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return x509svid.ParseRaw(der, keyDER)
}

func bundleFromProto(p *cav1.Bundle) (*x509bundle.Bundle, error) {
	td, err := spiffeid.TrustDomainFromString(p.GetTrustDomain())
	if err != nil {
		return nil, err
	}
	var roots []*x509.Certificate
	for _, der := range p.GetX509Authorities() {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, err
		}
		roots = append(roots, c)
	}
	if len(roots) == 0 {
		return nil, errors.New("empty bundle")
	}
	return x509bundle.FromX509Authorities(td, roots), nil
}
