package ca

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.step.sm/crypto/x509util"

	"github.com/lanyard-id/lanyard/ca/upstream"
	"github.com/lanyard-id/lanyard/storage"
)

// Certificate kinds recorded in the store.
const (
	KindWorkload = "workload"
	KindAgent    = "agent"
	KindServing  = "ca-serving"
	KindIstio    = "istio"
)

// KeySource gives the active signing intermediate (*Authority).
type KeySource interface {
	Current() (*X509CA, error)
}

// Recorder makes an issued certificate durable before it leaves the CA
// (*storage.Writer).
type Recorder interface {
	Record(ctx context.Context, rec storage.CertificateRecord) error
}

// DenyList says whether a SPIFFE ID may get no certificate (*Controls).
type DenyList interface {
	IdentityDenied(id string) bool
}

// Config configures the issuing pipeline.
type Config struct {
	TrustDomain spiffeid.TrustDomain
	Keys        KeySource
	Recorder    Recorder
	Policy      Policy
	// Denied, when set, is the admin deny list (*Controls): no certificate
	// is issued to an identity it reports.
	Denied DenyList
	// DefaultTTL of a workload SVID (1h) and MaxTTL a caller may ask for
	// (24h); AgentTTL of an agent SVID (1h).
	DefaultTTL time.Duration
	MaxTTL     time.Duration
	AgentTTL   time.Duration
	// Backdate is how far before the signing time a certificate's
	// NotBefore is set, so that peers whose clocks are behind the CA's
	// accept it at once; never more than a quarter of the certificate's
	// lifetime, so that a client renewing at half-life counted from
	// NotBefore does not renew at once. Default DefaultBackdate (5m), at
	// most MaxBackdate.
	Backdate time.Duration
	Clock    func() time.Time
	Logger   *slog.Logger
}

const (
	// DefaultBackdate covers the clock skew of a few minutes that NTP
	// outages and suspended VMs cause between the CA, agents and peers.
	// SPIRE backdates 10s, Istio's CA 2m, the Kubernetes CSR signer 5m;
	// docs/security.md says why 5m.
	DefaultBackdate = 5 * time.Minute
	// MaxBackdate is the largest Backdate a Config may ask for.
	MaxBackdate = time.Hour
)

// CA is the issuing pipeline: authorise → validate CSR → sign → record.
// Authentication happens before, at the API that knows the credential.
type CA struct {
	cfg Config
}

// New fills defaults and validates cfg.
func New(cfg Config) (*CA, error) {
	if cfg.TrustDomain.IsZero() {
		return nil, errors.New("ca: trust domain is required")
	}
	if cfg.Keys == nil || cfg.Recorder == nil {
		return nil, errors.New("ca: key source and recorder are required")
	}
	if cfg.DefaultTTL < 0 || cfg.MaxTTL < 0 || cfg.AgentTTL < 0 {
		return nil, errors.New("ca: negative TTL")
	}
	if cfg.DefaultTTL == 0 {
		cfg.DefaultTTL = time.Hour
	}
	if cfg.MaxTTL == 0 {
		cfg.MaxTTL = 24 * time.Hour
	}
	if cfg.AgentTTL == 0 {
		cfg.AgentTTL = time.Hour
	}
	if cfg.DefaultTTL > cfg.MaxTTL {
		return nil, fmt.Errorf("ca: default TTL %s is over the maximum %s", cfg.DefaultTTL, cfg.MaxTTL)
	}
	if err := cfg.Policy.Validate(); err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	switch {
	case cfg.Backdate < 0 || cfg.Backdate > MaxBackdate:
		return nil, fmt.Errorf("ca: backdate %s not in [0, %s]", cfg.Backdate, MaxBackdate)
	case cfg.Backdate == 0:
		cfg.Backdate = DefaultBackdate
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &CA{cfg: cfg}, nil
}

// TrustDomain is the CA's trust domain.
func (c *CA) TrustDomain() spiffeid.TrustDomain { return c.cfg.TrustDomain }

// Policy returns the CA's policy.
func (c *CA) Policy() *Policy { return &c.cfg.Policy }

// Subject is the Kubernetes identity a certificate is issued to.
type Subject struct {
	Cluster        string
	Namespace      string
	ServiceAccount string
	PodName        string
	PodUID         string
	NodeName       string
}

// WorkloadRequest asks for a workload X.509-SVID for an authenticated
// service account.
type WorkloadRequest struct {
	Subject Subject
	// CSR is a DER PKCS#10 request.
	CSR []byte
	// TTL requested; zero or negative means the default.
	TTL time.Duration
	// Caller names who asked (agent SPIFFE ID, "token"), for the record.
	Caller string
	// Kind is recorded (KindWorkload when empty, KindIstio for the Istio API).
	Kind string
}

// Issued is a signed and recorded certificate.
type Issued struct {
	ID spiffeid.ID
	// Chain is the leaf followed by the intermediates (no root).
	Chain  []*x509.Certificate
	Serial string
}

// Leaf is the issued certificate itself.
func (i *Issued) Leaf() *x509.Certificate { return i.Chain[0] }

// SignWorkload runs the pipeline for a workload SVID
// spiffe://<td>/ns/<ns>/sa/<sa>.
func (c *CA) SignWorkload(ctx context.Context, req WorkloadRequest) (*Issued, error) {
	id, err := WorkloadID(c.cfg.TrustDomain, req.Subject.Namespace, req.Subject.ServiceAccount)
	if err != nil {
		return nil, err
	}
	grant, err := c.cfg.Policy.Authorize(id, req.Subject.Namespace, req.Subject.ServiceAccount)
	if err != nil {
		return nil, err
	}
	if c.cfg.Denied != nil && c.cfg.Denied.IdentityDenied(id.String()) {
		return nil, fmt.Errorf("%w: identity %s is on the admin deny list", ErrPermissionDenied, id)
	}
	maxTTL := c.cfg.MaxTTL
	if grant.MaxTTL > 0 {
		maxTTL = min(maxTTL, grant.MaxTTL)
	}
	ttl, err := resolveTTL(req.TTL, c.cfg.DefaultTTL, maxTTL)
	if err != nil {
		return nil, err
	}
	csr, err := ParseCSR(req.CSR)
	if err != nil {
		return nil, err
	}
	if err := ValidateCSR(csr, id, grant.DNSNames, grant.IPs); err != nil {
		return nil, err
	}
	kind := req.Kind
	if kind == "" {
		kind = KindWorkload
	}
	return c.sign(ctx, leafRequest{
		id: id, pub: csr.PublicKey, dns: csr.DNSNames, ips: csr.IPAddresses, ttl: ttl,
		subject: req.Subject, caller: req.Caller, kind: kind,
	})
}

// AgentRequest asks for an agent SVID for an authenticated agent pod.
type AgentRequest struct {
	Subject Subject // Cluster and NodeName are required
	CSR     []byte  // DER
	Caller  string
}

// SignAgent issues spiffe://<td>/lanyard/agent/<cluster>/<node>.
func (c *CA) SignAgent(ctx context.Context, req AgentRequest) (*Issued, error) {
	id, err := AgentID(c.cfg.TrustDomain, req.Subject.Cluster, req.Subject.NodeName)
	if err != nil {
		return nil, err
	}
	if err := c.cfg.Policy.AgentAllowed(id); err != nil {
		return nil, err
	}
	csr, err := ParseCSR(req.CSR)
	if err != nil {
		return nil, err
	}
	if err := ValidateCSR(csr, id, nil, nil); err != nil {
		return nil, err
	}
	return c.sign(ctx, leafRequest{
		id: id, pub: csr.PublicKey, ttl: c.cfg.AgentTTL, subject: req.Subject, caller: req.Caller, kind: KindAgent,
	})
}

// SignServing issues the CA's own serving certificate for pub:
// spiffe://<td>/lanyard/ca plus the given DNS names and IPs.
func (c *CA) SignServing(ctx context.Context, pub crypto.PublicKey, dns []string, ips []net.IP, ttl time.Duration) (*Issued, error) {
	if ttl <= 0 {
		return nil, fmt.Errorf("%w: serving certificate TTL must be positive", ErrInvalidRequest)
	}
	return c.sign(ctx, leafRequest{
		id: ServingID(c.cfg.TrustDomain), pub: pub, dns: dns, ips: ips, ttl: ttl, caller: "self", kind: KindServing,
	})
}

func resolveTTL(requested, def, maxTTL time.Duration) (time.Duration, error) {
	if requested <= 0 {
		return min(def, maxTTL), nil
	}
	if requested > maxTTL {
		return 0, fmt.Errorf("%w: TTL %s is over the maximum %s", ErrInvalidRequest, requested, maxTTL)
	}
	return requested, nil
}

type leafRequest struct {
	id      spiffeid.ID
	pub     crypto.PublicKey
	dns     []string
	ips     []net.IP
	ttl     time.Duration
	subject Subject
	caller  string
	kind    string
}

// sign signs a leaf with the active intermediate and records it; the
// certificate is returned only once the record is durable.
func (c *CA) sign(ctx context.Context, r leafRequest) (*Issued, error) {
	x, err := c.cfg.Keys.Current()
	if err != nil {
		return nil, err
	}
	tmpl, err := c.leafTemplate(r, x.Certificate)
	if err != nil {
		return nil, err
	}
	cert, err := x509util.CreateCertificate(tmpl, x.Certificate, r.pub, x.Signer)
	if err != nil {
		return nil, fmt.Errorf("sign leaf: %w", err)
	}
	serial := cert.SerialNumber.Text(16)
	sum := sha256.Sum256(cert.Raw)
	rec := storage.CertificateRecord{
		Serial: serial, SPIFFEID: r.id.String(), Kind: r.kind,
		Cluster: r.subject.Cluster, Namespace: r.subject.Namespace, ServiceAccount: r.subject.ServiceAccount,
		PodName: r.subject.PodName, PodUID: r.subject.PodUID, NodeName: r.subject.NodeName,
		Caller: r.caller, NotBefore: cert.NotBefore, NotAfter: cert.NotAfter,
		SHA256: sum[:], IssuerKeyID: x.KeyID, IssuedAt: c.cfg.Clock(),
	}
	if err := c.cfg.Recorder.Record(ctx, rec); err != nil {
		// The certificate is dropped: nothing leaves unrecorded. The
		// recorder's error names the serial.
		return nil, fmt.Errorf("issue %s: %w", r.id, err)
	}
	chain := make([]*x509.Certificate, 0, 1+len(x.Chain))
	chain = append(chain, cert)
	chain = append(chain, x.Chain...)
	return &Issued{ID: r.id, Chain: chain, Serial: serial}, nil
}

// leafTemplate builds an X.509-SVID template: URI SAN, serverAuth+clientAuth,
// key usage by key type, 128-bit random serial, NotBefore backdated by
// min(Backdate, ttl/4), NotAfter never past the issuer's.
func (c *CA) leafTemplate(r leafRequest, issuer *x509.Certificate) (*x509.Certificate, error) {
	serial, err := upstream.RandomSerial()
	if err != nil {
		return nil, err
	}
	now := c.cfg.Clock()
	notAfter := now.Add(r.ttl)
	if notAfter.After(issuer.NotAfter) {
		notAfter = issuer.NotAfter
	}
	ku := x509.KeyUsageDigitalSignature
	switch r.pub.(type) {
	case *rsa.PublicKey:
		ku |= x509.KeyUsageKeyEncipherment
	case *ecdsa.PublicKey, ed25519.PublicKey:
	default:
		return nil, fmt.Errorf("%w: key type %T not allowed", ErrInvalidCSR, r.pub)
	}
	return &x509.Certificate{
		SerialNumber:          serial,
		NotBefore:             now.Add(-min(c.cfg.Backdate, r.ttl/4)),
		NotAfter:              notAfter,
		URIs:                  []*url.URL{r.id.URL()},
		DNSNames:              r.dns,
		IPAddresses:           r.ips,
		KeyUsage:              ku,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  false,
	}, nil
}
