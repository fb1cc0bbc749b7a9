package server

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/structpb"
	istiopb "istio.io/api/security/v1alpha1"

	"github.com/lanyard-id/lanyard/ca"
	"github.com/lanyard-id/lanyard/ca/tokens"
)

// Istio API defaults.
const (
	DefaultIstioAudience = "istio-ca"
	// DefaultIstioRateLimit certificates per second and DefaultIstioRateBurst
	// at once for one SPIFFE ID: 1,000 replicas of one service account
	// restarting at once get their certificates without waiting, a
	// client in a loop does not (it is held to 100/s while others pass).
	DefaultIstioRateLimit      = 100
	DefaultIstioRateBurst      = 1000
	DefaultIstioRateIdentities = 100_000
)

// What istio-agent and ztunnel send (gRPC lowercases metadata keys; the
// request's metadata Struct keeps its case).
const (
	istioClusterIDHeader     = "clusterid"
	istioAuthorizationHeader = "authorization"
	// IstioImpersonatedIdentity is the metadata field in which a trusted
	// node proxy names the SPIFFE ID it asks a certificate for.
	IstioImpersonatedIdentity = "ImpersonatedIdentity"
	// maxIdentityLen bounds an impersonated SPIFFE ID before it is parsed.
	maxIdentityLen = 2048
)

// IstioConfig turns on Istio's certificate API
// (/istio.v1.auth.IstioCertificateService/CreateCertificate) on the CA's
// gRPC port: istio-agent and ztunnel can then use Lanyard as their CA
// (CA_ADDR).
type IstioConfig struct {
	// Audience the service-account tokens must carry (default "istio-ca").
	Audience string
	// ClusterAliases maps the ClusterID an Istio proxy sends (Istio's
	// cluster name, "Kubernetes" unless configured) to the name of a
	// cluster of the CA. Other IDs are used as they are; no ClusterID
	// means the CA's default cluster.
	ClusterAliases map[string]string
	// TrustedNodeServiceAccounts ("namespace/name", e.g.
	// "istio-system/ztunnel") may ask for another identity's certificate
	// with ImpersonatedIdentity, for pods scheduled on their own node.
	TrustedNodeServiceAccounts []string
	// Pods says which service accounts have pods on which node
	// (*kube.PodIndex). Without it every impersonation is refused.
	Pods PodLocator
	// RateLimit is the sustained certificates per second one SPIFFE ID
	// may get (default 10; negative: no limit) and RateBurst how many at
	// once (default 100). RateLimitIdentities bounds the identities
	// tracked (default 100000; the least recently seen is forgotten).
	RateLimit           float64
	RateBurst           int
	RateLimitIdentities int
}

// PodLocator reports whether a pod of service account
// namespace/serviceAccount is scheduled on node in cluster
// (*kube.PodIndex). An error that means "cannot tell now" wraps
// kube.ErrUnavailable (codes.Unavailable).
type PodLocator interface {
	PodsOnNode(ctx context.Context, cluster, node, namespace, serviceAccount string) (bool, error)
}

// istioService implements Istio's IstioCertificateService.
type istioService struct {
	istiopb.UnimplementedIstioCertificateServiceServer
	ca       *ca.CA
	tokens   TokenVerifier
	bundler  Bundler
	limit    *limiter
	rate     *rateLimiter
	metrics  *Metrics
	log      *slog.Logger
	audience string
	aliases  map[string]string
	trusted  []string
	pods     PodLocator
	roots    rootFinder
}

func newIstioService(cfg IstioConfig, s *caService, clock func() time.Time) (*istioService, error) {
	if cfg.Audience == "" {
		cfg.Audience = DefaultIstioAudience
	}
	for _, sa := range cfg.TrustedNodeServiceAccounts {
		ns, name, ok := strings.Cut(sa, "/")
		if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
			return nil, fmt.Errorf("istio: trusted node service account %q: want namespace/name", sa)
		}
	}
	if cfg.RateLimit == 0 {
		cfg.RateLimit = DefaultIstioRateLimit
	}
	if cfg.RateBurst <= 0 {
		cfg.RateBurst = DefaultIstioRateBurst
	}
	if cfg.RateLimitIdentities <= 0 {
		cfg.RateLimitIdentities = DefaultIstioRateIdentities
	}
	var rl *rateLimiter
	if cfg.RateLimit > 0 {
		rl = newRateLimiter(cfg.RateLimit, cfg.RateBurst, cfg.RateLimitIdentities, clock)
	}
	return &istioService{
		ca: s.ca, tokens: s.tokens, bundler: s.bundler, limit: s.limit, rate: rl, metrics: s.metrics, log: s.log,
		audience: cfg.Audience, aliases: cfg.ClusterAliases, trusted: slices.Clone(cfg.TrustedNodeServiceAccounts), pods: cfg.Pods,
	}, nil
}

// CreateCertificate authenticates the caller's service-account token
// (authorization: Bearer, ClusterID), decides the identity (the caller's,
// or an impersonated one for a trusted node proxy), and signs the CSR
// through the CA pipeline. The answer is the chain, leaf first and root
// last, one PEM certificate per element.
func (s *istioService) CreateCertificate(ctx context.Context, req *istiopb.IstioCertificateRequest) (*istiopb.IstioCertificateResponse, error) {
	const method = istiopb.IstioCertificateService_CreateCertificate_FullMethodName
	resp, err := s.createCertificate(ctx, req)
	if err != nil {
		return nil, statusErr(s.log, method, err)
	}
	s.metrics.Issued.WithLabelValues(ca.KindIstio).Inc()
	return resp, nil
}

func (s *istioService) createCertificate(ctx context.Context, req *istiopb.IstioCertificateRequest) (*istiopb.IstioCertificateResponse, error) {
	token, cluster, err := s.credentials(ctx)
	if err != nil {
		return nil, err
	}
	// The signing slot covers the token verification too, as in the
	// Lanyard API: it is half the work.
	release, err := s.limit.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	sa, err := s.tokens.Verify(ctx, cluster, token, s.audience)
	if err != nil {
		return nil, err
	}
	caller, err := ca.WorkloadID(s.ca.TrustDomain(), sa.Namespace, sa.Name)
	if err != nil {
		return nil, err
	}
	subj, id, err := s.subject(ctx, sa, caller, req.GetMetadata())
	if err != nil {
		return nil, err
	}
	ttl, err := validity(req.GetValidityDuration())
	if err != nil {
		return nil, err
	}
	csr, err := csrDER(req.GetCsr())
	if err != nil {
		return nil, err
	}
	if !s.rate.allow(id.String()) {
		return nil, fmt.Errorf("%w: rate limit for %s", ErrOverloaded, id)
	}
	issued, err := s.ca.SignWorkload(ctx, ca.WorkloadRequest{
		Subject: subj, CSR: csr, TTL: ttl, Caller: "istio:" + caller.String(), Kind: ca.KindIstio,
	})
	if err != nil {
		return nil, err
	}
	root, err := s.roots.find(issued.Chain[len(issued.Chain)-1], s.bundler.Bundle())
	if err != nil {
		return nil, err
	}
	chain := make([]string, 0, len(issued.Chain)+1)
	for _, c := range issued.Chain {
		chain = append(chain, pemCert(c))
	}
	return &istiopb.IstioCertificateResponse{CertChain: append(chain, pemCert(root))}, nil
}

// pemCert is one PEM certificate; it ends in "\n", as Istio's clients
// expect of every element of cert_chain.
func pemCert(c *x509.Certificate) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))
}

// credentials reads the bearer token and the cluster from the request
// metadata, as istio-agent sends them.
func (s *istioService) credentials(ctx context.Context) (token, cluster string, err error) {
	md, _ := metadata.FromIncomingContext(ctx)
	auth := md.Get(istioAuthorizationHeader)
	if len(auth) != 1 {
		return "", "", fmt.Errorf("%w: want one authorization header, got %d", tokens.ErrInvalidToken, len(auth))
	}
	scheme, token, _ := strings.Cut(auth[0], " ")
	token = strings.TrimSpace(token)
	if !strings.EqualFold(scheme, "Bearer") || token == "" {
		return "", "", fmt.Errorf("%w: authorization is not a bearer token", tokens.ErrInvalidToken)
	}
	if len(token) > MaxTokenSize {
		return "", "", fmt.Errorf("%w: token over %d bytes", tokens.ErrInvalidToken, MaxTokenSize)
	}
	switch ids := md.Get(istioClusterIDHeader); len(ids) {
	case 0:
	case 1:
		cluster = ids[0]
		if alias, ok := s.aliases[cluster]; ok {
			cluster = alias
		}
	default:
		return "", "", fmt.Errorf("%w: %d ClusterID headers", tokens.ErrUnknownCluster, len(ids))
	}
	return token, cluster, nil
}

// subject is who the certificate is for: the caller, or the identity a
// trusted node proxy impersonates for a pod on its node.
func (s *istioService) subject(ctx context.Context, sa *tokens.ServiceAccount, caller spiffeid.ID, md *structpb.Struct) (ca.Subject, spiffeid.ID, error) {
	own := subjectOf(sa)
	v, ok := md.GetFields()[IstioImpersonatedIdentity]
	if !ok {
		return own, caller, nil
	}
	raw, isString := v.GetKind().(*structpb.Value_StringValue)
	if !isString {
		return ca.Subject{}, spiffeid.ID{}, fmt.Errorf("%w: %s is not a string", ca.ErrInvalidRequest, IstioImpersonatedIdentity)
	}
	if raw.StringValue == "" || raw.StringValue == caller.String() {
		return own, caller, nil
	}
	ns, name, id, err := s.parseWorkloadID(raw.StringValue)
	if err != nil {
		return ca.Subject{}, spiffeid.ID{}, err
	}
	if err := s.mayImpersonate(ctx, sa, ns, name); err != nil {
		return ca.Subject{}, spiffeid.ID{}, err
	}
	s.log.Debug("impersonation allowed", "caller", caller.String(), "identity", id.String(), "node", sa.NodeName)
	return ca.Subject{Cluster: sa.Cluster, Namespace: ns, ServiceAccount: name, NodeName: sa.NodeName}, id, nil
}

// mayImpersonate allows a trusted node service account, whose token names
// its node and which itself runs there, to ask for ns/name when a pod of
// ns/name is scheduled on that node.
func (s *istioService) mayImpersonate(ctx context.Context, sa *tokens.ServiceAccount, ns, name string) error {
	who := sa.Namespace + "/" + sa.Name
	switch {
	case s.pods == nil || len(s.trusted) == 0:
		return fmt.Errorf("%w: impersonation is not configured on this CA", ca.ErrPermissionDenied)
	case !slices.Contains(s.trusted, who):
		return fmt.Errorf("%w: %s is not a trusted node service account", ca.ErrPermissionDenied, who)
	case sa.NodeName == "":
		return fmt.Errorf("%w: token of %s names no node", ca.ErrPermissionDenied, who)
	}
	on, err := s.pods.PodsOnNode(ctx, sa.Cluster, sa.NodeName, sa.Namespace, sa.Name)
	if err != nil {
		return err
	}
	if !on {
		return fmt.Errorf("%w: no pod of %s on node %s", ca.ErrPermissionDenied, who, sa.NodeName)
	}
	if on, err = s.pods.PodsOnNode(ctx, sa.Cluster, sa.NodeName, ns, name); err != nil {
		return err
	}
	if !on {
		return fmt.Errorf("%w: no pod of %s/%s on node %s", ca.ErrPermissionDenied, ns, name, sa.NodeName)
	}
	return nil
}

// parseWorkloadID accepts exactly spiffe://<td>/ns/<ns>/sa/<sa> of this
// CA's trust domain.
func (s *istioService) parseWorkloadID(raw string) (ns, name string, id spiffeid.ID, err error) {
	if len(raw) > maxIdentityLen {
		return "", "", spiffeid.ID{}, fmt.Errorf("%w: %s over %d bytes", ca.ErrInvalidRequest, IstioImpersonatedIdentity, maxIdentityLen)
	}
	id, err = spiffeid.FromString(raw)
	if err != nil {
		return "", "", spiffeid.ID{}, fmt.Errorf("%w: %s: %v", ca.ErrInvalidRequest, IstioImpersonatedIdentity, err)
	}
	td := s.ca.TrustDomain()
	if !id.MemberOf(td) {
		return "", "", spiffeid.ID{}, fmt.Errorf("%w: %s is not in trust domain %s", ca.ErrPermissionDenied, id, td)
	}
	segs := strings.Split(strings.TrimPrefix(id.Path(), "/"), "/")
	if len(segs) != 4 || segs[0] != "ns" || segs[2] != "sa" {
		return "", "", spiffeid.ID{}, fmt.Errorf("%w: %s is not spiffe://%s/ns/<namespace>/sa/<name>", ca.ErrInvalidRequest, id, td)
	}
	if want, err := ca.WorkloadID(td, segs[1], segs[3]); err != nil || want != id {
		return "", "", spiffeid.ID{}, fmt.Errorf("%w: %s is not a valid workload identity", ca.ErrInvalidRequest, id)
	}
	return segs[1], segs[3], id, nil
}

// validity turns validity_duration (seconds) into a TTL; zero or negative
// means the CA's default. A value too large for a time.Duration is over
// any maximum.
func validity(seconds int64) (time.Duration, error) {
	if seconds <= 0 {
		return 0, nil
	}
	if seconds > math.MaxInt64/int64(time.Second) {
		return 0, fmt.Errorf("%w: validity_duration %d s is over the maximum", ca.ErrInvalidRequest, seconds)
	}
	return time.Duration(seconds) * time.Second, nil
}

// csrDER decodes one PEM CERTIFICATE REQUEST with ca.ParseCSRPEM's rules
// (size bound first, block type, nothing after the block) and returns its
// DER for the pipeline, which parses and checks it.
func csrDER(s string) ([]byte, error) {
	if len(s) > ca.MaxCSRSize {
		return nil, fmt.Errorf("%w: larger than %d bytes", ca.ErrInvalidCSR, ca.MaxCSRSize)
	}
	block, rest := pem.Decode([]byte(s))
	if block == nil {
		return nil, fmt.Errorf("%w: no PEM block", ca.ErrInvalidCSR)
	}
	if block.Type != "CERTIFICATE REQUEST" && block.Type != "NEW CERTIFICATE REQUEST" {
		return nil, fmt.Errorf("%w: PEM block is %q, want CERTIFICATE REQUEST", ca.ErrInvalidCSR, block.Type)
	}
	if len(bytes.TrimLeft(rest, " \t\r\n")) != 0 {
		return nil, fmt.Errorf("%w: data after the PEM block", ca.ErrInvalidCSR)
	}
	return block.Bytes, nil
}

// rootFinder finds the bundle root a chain ends at, remembering the last
// answer until the intermediate or the bundle changes.
type rootFinder struct {
	last atomic.Pointer[rootMatch]
}

type rootMatch struct {
	issuer *x509.Certificate
	seq    int64
	root   *x509.Certificate
}

func (f *rootFinder) find(top *x509.Certificate, b *ca.Bundle) (*x509.Certificate, error) {
	if m := f.last.Load(); m != nil && m.issuer == top && m.seq == b.Sequence {
		return m.root, nil
	}
	for _, r := range b.Roots {
		if bytes.Equal(top.RawIssuer, r.RawSubject) && top.CheckSignatureFrom(r) == nil {
			f.last.Store(&rootMatch{issuer: top, seq: b.Sequence, root: r})
			return r, nil
		}
	}
	return nil, fmt.Errorf("%w: no root of the bundle issued %s", ca.ErrNotReady, top.Subject)
}
