package server

import (
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/lanyard-id/lanyard/ca"
	"github.com/lanyard-id/lanyard/ca/kube"
	"github.com/lanyard-id/lanyard/ca/tokens"
	cav1 "github.com/lanyard-id/lanyard/proto/lanyard/ca/v1"
	"github.com/lanyard-id/lanyard/storage"
)

// Request bounds of the CA API.
const (
	MaxBatchEntries = 1000
	// MaxTokenSize is the verifiers' own bound, checked here before any work.
	MaxTokenSize = tokens.MaxTokenSize
)

// TokenVerifier authenticates service-account tokens per cluster
// (*tokens.Clusters).
type TokenVerifier interface {
	Verify(ctx context.Context, cluster, token, audience string) (*tokens.ServiceAccount, error)
}

// Bundler publishes the trust bundle (*ca.Authority).
type Bundler interface {
	Bundle() *ca.Bundle
	BundleChanged() <-chan struct{}
}

// caService implements cav1.CAServiceServer.
type caService struct {
	cav1.UnimplementedCAServiceServer
	ca       *ca.CA
	tokens   TokenVerifier
	bundler  Bundler
	store    storage.Store
	limit    *limiter
	metrics  *Metrics
	log      *slog.Logger
	audience string
	agents   []string // "namespace/name" of service accounts that may attest as agents
	unix     bool     // trust agents' unix attestation (dev and non-Kubernetes hosts)
	clock    func() time.Time
	// stopping is closed when the server begins to stop, so that
	// long-lived streams end and a graceful stop does not wait on them.
	stopping <-chan struct{}
	banned   *bannedCache
	pods     PodFinder // nil: k8s attestation refused
	// controls are the admin's bans, evictions and deny list (nil: none);
	// reports keeps what agents say they hold.
	controls *ca.Controls
	reports  *agentReports
}

func (s *caService) AttestAgent(ctx context.Context, req *cav1.AttestAgentRequest) (*cav1.AttestAgentResponse, error) {
	const method = "/lanyard.ca.v1.CAService/AttestAgent"
	issued, err := s.attestAgent(ctx, req)
	if err != nil {
		return nil, statusErr(s.log, method, err)
	}
	s.metrics.Issued.WithLabelValues(ca.KindAgent).Inc()
	s.metrics.AgentsAttested.Inc()
	return &cav1.AttestAgentResponse{Svid: svidProto(issued), Bundle: bundleProto(s.bundler.Bundle())}, nil
}

func (s *caService) attestAgent(ctx context.Context, req *cav1.AttestAgentRequest) (*ca.Issued, error) {
	if len(req.GetToken()) == 0 || len(req.GetToken()) > MaxTokenSize {
		return nil, fmt.Errorf("%w: token missing or over %d bytes", tokens.ErrInvalidToken, MaxTokenSize)
	}
	sa, err := s.tokens.Verify(ctx, req.GetCluster(), req.GetToken(), s.audience)
	if err != nil {
		return nil, err
	}
	if !slices.Contains(s.agents, sa.Namespace+"/"+sa.Name) {
		return nil, fmt.Errorf("%w: service account %s/%s may not attest as an agent", ca.ErrPermissionDenied, sa.Namespace, sa.Name)
	}
	if sa.NodeName == "" || sa.PodUID == "" {
		return nil, fmt.Errorf("%w: agent token is not bound to a pod on a node", ca.ErrPermissionDenied)
	}
	id, err := ca.AgentID(s.ca.TrustDomain(), sa.Cluster, sa.NodeName)
	if err != nil {
		return nil, err
	}
	if err := s.agentAllowed(ctx, id); err != nil {
		return nil, err
	}
	release, err := s.limit.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	issued, err := s.ca.SignAgent(ctx, ca.AgentRequest{Subject: subjectOf(sa), CSR: req.GetCsr(), Caller: "token:" + sa.Namespace + "/" + sa.Name})
	if err != nil {
		return nil, err
	}
	now := s.clock()
	if err := s.store.UpsertAgent(ctx, storage.AgentRecord{
		SPIFFEID: id.String(), Cluster: sa.Cluster, NodeName: sa.NodeName, Serial: issued.Serial,
		FirstSeen: now, LastSeen: now, NotAfter: issued.Leaf().NotAfter,
		BundleSeqAck: req.GetAgentState().GetBundleSequence(), Workloads: req.GetAgentState().GetWorkloads(),
	}); err != nil {
		return nil, fmt.Errorf("record agent: %w", err)
	}
	return issued, nil
}

// agentAllowed refuses agents on the policy deny list or banned in the store.
func (s *caService) agentAllowed(ctx context.Context, id spiffeid.ID) error {
	if err := s.ca.Policy().AgentAllowed(id); err != nil {
		return err
	}
	if s.controls != nil && s.controls.AgentBanned(id.String()) {
		return fmt.Errorf("%w: agent %s is banned", ca.ErrPermissionDenied, id)
	}
	banned, err := s.banned.banned(ctx, id)
	if err != nil {
		return err
	}
	if banned {
		return fmt.Errorf("%w: agent %s is banned", ca.ErrPermissionDenied, id)
	}
	return nil
}

func (s *caService) BatchSignSVIDs(ctx context.Context, req *cav1.BatchSignSVIDsRequest) (*cav1.BatchSignSVIDsResponse, error) {
	const method = "/lanyard.ca.v1.CAService/BatchSignSVIDs"
	agent, err := s.peerAgent(ctx)
	if err != nil {
		return nil, statusErr(s.log, method, err)
	}
	n := len(req.GetRequests())
	if n == 0 || n > MaxBatchEntries {
		return nil, statusErr(s.log, method, fmt.Errorf("%w: batch of %d entries (1–%d allowed)", ca.ErrInvalidRequest, n, MaxBatchEntries))
	}
	admitted, err := s.limit.admit(n)
	if err != nil {
		return nil, statusErr(s.log, method, err)
	}
	defer admitted()
	s.metrics.BatchSize.Observe(float64(n))
	s.reports.report(agent.String(), req.GetAgentState(), s.clock())
	cluster, node, _ := ca.ParseAgentID(s.ca.TrustDomain(), agent)
	results := make([]*cav1.SVIDResult, n)
	answer := func(ctx context.Context, i int, entry *cav1.SVIDRequest) {
		res := &cav1.SVIDResult{Id: entry.GetId()}
		issued, err := s.signEntry(ctx, agent, cluster, node, entry)
		if err != nil {
			st := toStatus(err)
			res.Code, res.Message = uint32(st.Code()), st.Message()
			s.metrics.Rejected.WithLabelValues(method+":entry", st.Code().String()).Inc()
			logRefusal(s.log, st, "batch entry", err, "method", method, "agent", agent.String())
		} else {
			res.Svid = svidProto(issued)
			s.metrics.Issued.WithLabelValues(ca.KindWorkload).Inc()
		}
		results[i] = res
	}
	if n == 1 { // the common renewal of one workload: no goroutine to spawn and grow
		answer(ctx, 0, req.GetRequests()[0])
		return &cav1.BatchSignSVIDsResponse{Results: results}, nil
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(64)
	for i, entry := range req.GetRequests() {
		g.Go(func() error {
			answer(gctx, i, entry)
			return nil
		})
	}
	_ = g.Wait()
	return &cav1.BatchSignSVIDsResponse{Results: results}, nil
}

func (s *caService) signEntry(ctx context.Context, agent spiffeid.ID, cluster, node string, e *cav1.SVIDRequest) (iss *ca.Issued, err error) {
	defer func() {
		if r := recover(); r != nil {
			s.metrics.PanicsRecovered.Inc()
			s.log.Error("panic in batch entry", "panic", r)
			iss, err = nil, fmt.Errorf("%w: batch entry", errPanic)
		}
	}()
	// The slot covers the token verification too: it is half the work.
	release, err := s.limit.acquireAdmitted(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	var subj ca.Subject
	switch c := e.GetCaller().(type) {
	case *cav1.SVIDRequest_Token:
		if len(c.Token) > MaxTokenSize {
			return nil, fmt.Errorf("%w: token over %d bytes", tokens.ErrInvalidToken, MaxTokenSize)
		}
		sa, err := s.tokens.Verify(ctx, cluster, c.Token, s.audience)
		if err != nil {
			return nil, err
		}
		if sa.NodeName != "" && sa.NodeName != node {
			return nil, fmt.Errorf("%w: token is bound to node %q, agent runs on %q", ca.ErrPermissionDenied, sa.NodeName, node)
		}
		subj = subjectOf(sa)
	case *cav1.SVIDRequest_Attested:
		a := c.Attested
		switch {
		case a.GetAttestor() == "unix" && s.unix:
			subj = ca.Subject{Cluster: cluster, Namespace: a.GetNamespace(), ServiceAccount: a.GetServiceAccount(), NodeName: node}
		case a.GetAttestor() == "unix":
			return nil, fmt.Errorf("%w: unix attestation is not trusted by this CA", ca.ErrPermissionDenied)
		case a.GetAttestor() == "k8s":
			if subj, err = s.attestedPod(ctx, cluster, node, a); err != nil {
				return nil, err
			}
		default:
			return nil, fmt.Errorf("%w: attestor %q is not supported by this CA", ca.ErrPermissionDenied, a.GetAttestor())
		}
	default:
		return nil, fmt.Errorf("%w: entry has neither token nor attested workload", ca.ErrInvalidRequest)
	}
	ttl, err := requestTTL(e.GetTtl())
	if err != nil {
		return nil, err
	}
	return s.ca.SignWorkload(ctx, ca.WorkloadRequest{
		Subject: subj, CSR: e.GetCsr(), TTL: ttl, Caller: agent.String(),
	})
}

// PodFinder finds a pod by UID in a cluster (kube.PodIndexes).
type PodFinder interface {
	PodByUID(ctx context.Context, cluster, uid string) (kube.Pod, bool, error)
}

// attestedPod checks a workload an agent attested with its k8s attestor:
// the pod exists, runs on the agent's node, and has the namespace and
// service account the agent claims. An agent can therefore only ever get
// identities of pods on its own node.
func (s *caService) attestedPod(ctx context.Context, cluster, node string, a *cav1.AttestedWorkload) (ca.Subject, error) {
	if s.pods == nil {
		return ca.Subject{}, fmt.Errorf("%w: k8s attestation needs the CA's pod index (clusters[].kubernetes)", ca.ErrPermissionDenied)
	}
	pod, found, err := s.pods.PodByUID(ctx, cluster, a.GetPodUid())
	switch {
	case err != nil:
		return ca.Subject{}, err
	case !found:
		return ca.Subject{}, fmt.Errorf("%w: no running pod with UID %.64q in cluster %s", ca.ErrPermissionDenied, a.GetPodUid(), cluster)
	case pod.NodeName != node:
		return ca.Subject{}, fmt.Errorf("%w: pod %s/%s runs on node %q, the agent on %q", ca.ErrPermissionDenied, pod.Namespace, pod.Name, pod.NodeName, node)
	case pod.Namespace != a.GetNamespace() || pod.ServiceAccount != a.GetServiceAccount():
		return ca.Subject{}, fmt.Errorf("%w: pod %s/%s runs as %s/%s, the agent claims %.64s/%.64s", ca.ErrPermissionDenied,
			pod.Namespace, pod.Name, pod.Namespace, pod.ServiceAccount, a.GetNamespace(), a.GetServiceAccount())
	}
	return ca.Subject{Cluster: cluster, Namespace: pod.Namespace, ServiceAccount: pod.ServiceAccount, PodName: pod.Name, PodUID: pod.UID, NodeName: node}, nil
}

// requestTTL reads an entry's TTL: absent or zero means the CA default; a
// negative or malformed duration is a bad request.
func requestTTL(d *durationpb.Duration) (time.Duration, error) {
	if d == nil {
		return 0, nil
	}
	if err := d.CheckValid(); err != nil {
		return 0, fmt.Errorf("%w: ttl: %v", ca.ErrInvalidRequest, err)
	}
	ttl := d.AsDuration()
	if ttl < 0 {
		return 0, fmt.Errorf("%w: negative ttl %s", ca.ErrInvalidRequest, ttl)
	}
	return ttl, nil
}

// peerAgent returns the agent SPIFFE ID of the mTLS peer.
func (s *caService) peerAgent(ctx context.Context) (spiffeid.ID, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return spiffeid.ID{}, ErrNoClientCert
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return spiffeid.ID{}, fmt.Errorf("%w: call with the agent SVID", ErrNoClientCert)
	}
	leaf := info.State.VerifiedChains[0][0]
	if len(leaf.URIs) != 1 {
		return spiffeid.ID{}, fmt.Errorf("%w: client certificate has no SPIFFE ID", ca.ErrPermissionDenied)
	}
	id, err := spiffeid.FromURI(leaf.URIs[0])
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("%w: client certificate has no SPIFFE ID", ca.ErrPermissionDenied)
	}
	if _, _, err := ca.ParseAgentID(s.ca.TrustDomain(), id); err != nil {
		return spiffeid.ID{}, err
	}
	if s.controls != nil && s.controls.SVIDRevoked(leaf.SerialNumber.Text(16)) {
		return spiffeid.ID{}, fmt.Errorf("%w: agent SVID of %s was evicted, attest again", ca.ErrPermissionDenied, id)
	}
	if err := s.agentAllowed(ctx, id); err != nil {
		return spiffeid.ID{}, err
	}
	return id, nil
}

func (s *caService) GetBundle(context.Context, *cav1.GetBundleRequest) (*cav1.GetBundleResponse, error) {
	return &cav1.GetBundleResponse{Bundle: bundleProto(s.bundler.Bundle())}, nil
}

func (s *caService) WatchBundle(_ *cav1.WatchBundleRequest, stream cav1.CAService_WatchBundleServer) error {
	s.metrics.WatchersGauge.Inc()
	defer s.metrics.WatchersGauge.Dec()
	for {
		changed := s.bundler.BundleChanged()
		if err := stream.Send(&cav1.WatchBundleResponse{Bundle: bundleProto(s.bundler.Bundle())}); err != nil {
			return err
		}
		select {
		case <-stream.Context().Done():
			return nil
		case <-s.stopping:
			return toStatus(ErrStopping).Err() // expected at every shutdown: not logged
		case <-changed:
		}
	}
}

func subjectOf(sa *tokens.ServiceAccount) ca.Subject {
	return ca.Subject{
		Cluster: sa.Cluster, Namespace: sa.Namespace, ServiceAccount: sa.Name,
		PodName: sa.PodName, PodUID: sa.PodUID, NodeName: sa.NodeName,
	}
}

func svidProto(i *ca.Issued) *cav1.X509SVID {
	chain := make([][]byte, len(i.Chain))
	for j, c := range i.Chain {
		chain[j] = c.Raw
	}
	return &cav1.X509SVID{SpiffeId: i.ID.String(), CertChain: chain, ExpiresAt: timestamppb.New(i.Leaf().NotAfter)}
}

func bundleProto(b *ca.Bundle) *cav1.Bundle {
	return &cav1.Bundle{
		TrustDomain:     b.TrustDomain.Name(),
		X509Authorities: rawCerts(b.Roots),
		Sequence:        b.Sequence,
		RefreshHint:     durationpb.New(5 * time.Minute),
	}
}

func rawCerts(certs []*x509.Certificate) [][]byte {
	out := make([][]byte, len(certs))
	for i, c := range certs {
		out[i] = c.Raw
	}
	return out
}
