package server

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/peer"
	"google.golang.org/protobuf/proto"
	istiopb "istio.io/api/security/v1alpha1"

	cav1 "github.com/lanyard-id/lanyard/proto/lanyard/ca/v1"
)

// Defaults of Limits. Every limit answers ResourceExhausted when crossed
// (clients back off and retry), except the keepalive policy, which closes
// the connection of a client that pings too often.
const (
	// DefaultMaxConcurrentStreams bounds the streams of one connection.
	// An agent multiplexes its WatchBundle stream and a few batches in
	// flight; istiod proxies many workloads over few connections.
	DefaultMaxConcurrentStreams = 1024
	// DefaultMaxHeaderListSize bounds a request's metadata: Istio sends
	// the token (at most 16 KiB) in authorization metadata.
	DefaultMaxHeaderListSize = 64 << 10
	// DefaultUnauthenticatedMaxMsgSize bounds the requests of the methods
	// anyone may call before proving anything: AttestAgent (a token and a
	// CSR), GetBundle, WatchBundle and Istio's CreateCertificate (a CSR;
	// the token is in metadata). A 4096-bit RSA CSR is under 2 KiB; the
	// handlers' own bounds (a 16 KiB token, a 64 KiB Istio CSR) answer
	// InvalidArgument or Unauthenticated below this.
	DefaultUnauthenticatedMaxMsgSize = 128 << 10
	// DefaultMaxWatchStreamsPerPeer bounds the WatchBundle streams open at
	// once per peer: per agent SPIFFE ID for callers with an SVID, per
	// source IP for the others (several agents may share a NAT address,
	// hence the higher bound).
	DefaultMaxWatchStreamsPerPeer    = 8
	DefaultMaxWatchStreamsPerAddress = 64
	// DefaultKeepaliveMinTime is the least interval between a client's
	// keepalive pings; a client pinging faster is disconnected.
	DefaultKeepaliveMinTime = 10 * time.Second
)

// Limits bounds what one connection or call may ask of the CA's gRPC
// server; zero fields take the defaults above. The whole-message bound of
// the server is MaxRecvMsgSize (a full batch of MaxBatchEntries entries);
// the bound on entries per batch is MaxBatchEntries.
type Limits struct {
	MaxConcurrentStreams      uint32
	MaxHeaderListSize         uint32
	UnauthenticatedMaxMsgSize int
	MaxWatchStreamsPerPeer    int
	MaxWatchStreamsPerAddress int
	KeepaliveMinTime          time.Duration
	// AgentRatePerSecond, AgentRateBurst and AgentMaxQueued are each
	// agent's share of BatchSignSVIDs, in entries (see fairness.go).
	AgentRatePerSecond float64
	AgentRateBurst     int
	AgentMaxQueued     int
}

func (l *Limits) fill() {
	if l.MaxConcurrentStreams == 0 {
		l.MaxConcurrentStreams = DefaultMaxConcurrentStreams
	}
	if l.MaxHeaderListSize == 0 {
		l.MaxHeaderListSize = DefaultMaxHeaderListSize
	}
	if l.UnauthenticatedMaxMsgSize == 0 {
		l.UnauthenticatedMaxMsgSize = DefaultUnauthenticatedMaxMsgSize
	}
	if l.MaxWatchStreamsPerPeer == 0 {
		l.MaxWatchStreamsPerPeer = DefaultMaxWatchStreamsPerPeer
	}
	if l.MaxWatchStreamsPerAddress == 0 {
		l.MaxWatchStreamsPerAddress = DefaultMaxWatchStreamsPerAddress
	}
	if l.KeepaliveMinTime == 0 {
		l.KeepaliveMinTime = DefaultKeepaliveMinTime
	}
	if l.AgentRatePerSecond == 0 {
		l.AgentRatePerSecond = DefaultAgentRatePerSecond
	}
	if l.AgentRateBurst < MaxBatchEntries {
		l.AgentRateBurst = max(DefaultAgentRateBurst, MaxBatchEntries) // a full batch must pass
	}
	if l.AgentMaxQueued < MaxBatchEntries {
		l.AgentMaxQueued = max(DefaultAgentMaxQueued, MaxBatchEntries)
	}
}

// unauthenticatedMethods are the methods whose requests are bounded by
// UnauthenticatedMaxMsgSize.
var unauthenticatedMethods = map[string]bool{
	cav1.CAService_AttestAgent_FullMethodName:                        true,
	cav1.CAService_GetBundle_FullMethodName:                          true,
	cav1.CAService_WatchBundle_FullMethodName:                        true,
	istiopb.IstioCertificateService_CreateCertificate_FullMethodName: true,
}

// serverOptions are the transport limits and the interceptors that apply
// the per-method ones.
func (l Limits) serverOptions(clock func() time.Time) []grpc.ServerOption {
	w := &watchCounter{perPeer: l.MaxWatchStreamsPerPeer, perAddr: l.MaxWatchStreamsPerAddress, open: map[string]int{}}
	shares := newAgentShares(l, clock)
	return []grpc.ServerOption{
		grpc.MaxRecvMsgSize(MaxRecvMsgSize),
		grpc.MaxConcurrentStreams(l.MaxConcurrentStreams),
		grpc.MaxHeaderListSize(l.MaxHeaderListSize),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: l.KeepaliveMinTime, PermitWithoutStream: true}),
		grpc.ChainUnaryInterceptor(l.unarySizeInterceptor, shares.interceptor),
		grpc.ChainStreamInterceptor(l.streamSizeInterceptor, w.interceptor),
	}
}

// checkSize refuses a request of an unauthenticated method over the
// limit. gRPC has decoded it already (within MaxRecvMsgSize); the check
// keeps it from going further.
func (l Limits) checkSize(method string, req any) error {
	m, ok := req.(proto.Message)
	if !ok || !unauthenticatedMethods[method] {
		return nil
	}
	if n := proto.Size(m); n > l.UnauthenticatedMaxMsgSize {
		return fmt.Errorf("%w: request of %d bytes, at most %d for %s", ErrRequestTooLarge, n, l.UnauthenticatedMaxMsgSize, method)
	}
	return nil
}

func (l Limits) unarySizeInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if err := l.checkSize(info.FullMethod, req); err != nil {
		return nil, toStatus(err).Err()
	}
	return handler(ctx, req)
}

func (l Limits) streamSizeInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if !unauthenticatedMethods[info.FullMethod] {
		return handler(srv, ss)
	}
	return handler(srv, &sizedStream{ServerStream: ss, l: l, method: info.FullMethod})
}

type sizedStream struct {
	grpc.ServerStream
	l      Limits
	method string
}

func (s *sizedStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	if err := s.l.checkSize(s.method, m); err != nil {
		return toStatus(err).Err()
	}
	return nil
}

// watchCounter bounds the WatchBundle streams open per peer.
type watchCounter struct {
	perPeer, perAddr int

	mu   sync.Mutex
	open map[string]int
}

func (w *watchCounter) interceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if info.FullMethod != cav1.CAService_WatchBundle_FullMethodName {
		return handler(srv, ss)
	}
	key, limit := w.peerKey(ss.Context())
	w.mu.Lock()
	if w.open[key] >= limit {
		w.mu.Unlock()
		return toStatus(fmt.Errorf("%w: %d WatchBundle streams open for %s", ErrTooManyStreams, limit, key)).Err()
	}
	w.open[key]++
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		if w.open[key]--; w.open[key] <= 0 {
			delete(w.open, key)
		}
		w.mu.Unlock()
	}()
	return handler(srv, ss)
}

// peerKey is the caller's SPIFFE ID when it presented a verified
// certificate with one, else its source IP.
func (w *watchCounter) peerKey(ctx context.Context) (string, int) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return "unknown", w.perAddr
	}
	if info, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(info.State.VerifiedChains) > 0 &&
		len(info.State.VerifiedChains[0]) > 0 && len(info.State.VerifiedChains[0][0].URIs) == 1 {
		return "id:" + info.State.VerifiedChains[0][0].URIs[0].String(), w.perPeer
	}
	host := p.Addr.String()
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	return "addr:" + host, w.perAddr
}
