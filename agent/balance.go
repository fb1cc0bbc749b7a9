package agent

import (
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
)

// serviceConfig spreads calls over every CA replica the target resolves to
// (round_robin: a "dns:///" target of a headless Service yields one
// address per replica, re-resolved when a connection fails) and retries a
// call that fails with UNAVAILABLE, which a replica dying mid-call
// produces, on the next replica. A retried BatchSignSVIDs is safe: every
// certificate a replica hands out is recorded before it leaves, and one
// signed for a call whose answer was lost is recorded but never used.
const serviceConfig = `{
  "loadBalancingConfig": [{"round_robin": {}}],
  "methodConfig": [{
    "name": [{"service": "lanyard.ca.v1.CAService"}],
    "retryPolicy": {
      "maxAttempts": 4,
      "initialBackoff": "0.05s",
      "maxBackoff": "1s",
      "backoffMultiplier": 2,
      "retryableStatusCodes": ["UNAVAILABLE"]
    }
  }]
}`

// dialTarget returns the gRPC target for addr and the options it needs.
// addr is a gRPC target ("dns:///lanyard-ca-headless.lanyard.svc:8443",
// "host:port"), or a comma-separated list of host:port, one per replica,
// for hosts without DNS for them (development, tests): those are served
// by a resolver of their own.
func dialTarget(addr string) (string, []grpc.DialOption) {
	opts := []grpc.DialOption{grpc.WithDefaultServiceConfig(serviceConfig)}
	if !strings.Contains(addr, ",") {
		return addr, opts
	}
	var st resolver.State
	for _, a := range strings.Split(addr, ",") {
		if a = strings.TrimSpace(a); a != "" {
			st.Endpoints = append(st.Endpoints, resolver.Endpoint{Addresses: []resolver.Address{{Addr: a}}})
		}
	}
	r := manual.NewBuilderWithScheme("lanyard-ca")
	r.InitialState(st)
	return r.Scheme() + ":///ca", append(opts, grpc.WithResolvers(r))
}
