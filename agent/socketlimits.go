package agent

import (
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
)

// Limits of the agent's socket. Anyone who can reach the socket can send
// anything; these bound what one connection can make the agent read and
// hold. SDS names are bounded further by the sds package
// (sds.MaxResourceNames, sds.MaxResourceNameLength).
const (
	// SocketMaxRecvMsgSize bounds one request: a DiscoveryRequest with
	// the most names allowed (64 × 2 KiB) and its node metadata fits.
	SocketMaxRecvMsgSize = 256 << 10
	// SocketMaxConcurrentStreams bounds the streams of one connection
	// (Envoy multiplexes its SDS streams over one connection: a few per
	// listener and cluster).
	SocketMaxConcurrentStreams = 256
	// SocketMaxHeaderListSize bounds a request's metadata: a bearer token
	// (at most 16 KiB) and the usual headers.
	SocketMaxHeaderListSize = 32 << 10
	// SocketKeepaliveMinTime is the least interval between a client's
	// keepalive pings; faster pingers are disconnected.
	SocketKeepaliveMinTime = 10 * time.Second
)

// SocketServerOptions are the gRPC server options of the agent's socket:
// the limits above.
func SocketServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.MaxRecvMsgSize(SocketMaxRecvMsgSize),
		grpc.MaxConcurrentStreams(SocketMaxConcurrentStreams),
		grpc.MaxHeaderListSize(SocketMaxHeaderListSize),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: SocketKeepaliveMinTime, PermitWithoutStream: true}),
	}
}
