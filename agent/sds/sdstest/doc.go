// Package sdstest is an Envoy-like SDS v3 client for tests of Lanyard's
// SDS server, in unit and integration tests alike.
//
// It follows the state-of-the-world xDS protocol as Envoy does: the first
// request carries node and resource_names; every response is answered at
// once, an ACK echoing its version_info and nonce, a NACK keeping the last
// accepted version_info, echoing the nonce and setting error_detail; a
// subscription change is a new request with the last version and nonce; a
// new stream starts with the last accepted version and no nonce.
//
// go-control-plane's pkg/client/sotw/v3 is not used: it speaks only ADS,
// sends no resource_names and cannot change a subscription.
package sdstest

import (
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
)

// Dial returns a client connection to the agent's Unix socket at path. It
// reconnects quickly (100 ms backoff, up to 1 s), for tests that restart
// the server. opts are added after the defaults.
func Dial(path string, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	bo := backoff.DefaultConfig
	bo.BaseDelay, bo.MaxDelay = 100*time.Millisecond, time.Second
	return grpc.NewClient("unix://"+path, append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: bo, MinConnectTimeout: time.Second}),
	}, opts...)...)
}
