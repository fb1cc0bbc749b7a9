package workloadapi

import (
	"context"
	"fmt"

	"google.golang.org/grpc/metadata"

	"github.com/lanyard-id/lanyard/agent"
)

// securityHeader must be sent, with the value "true", on every Workload
// API call, so that a process tricked into relaying a request (SSRF) cannot
// reach the API.
const securityHeader = "workload.spiffe.io"

// checkSecurityHeader refuses calls without the security header, with the
// code and message of the spec and SPIRE. Like SPIRE, exactly one value,
// "true", is accepted.
func checkSecurityHeader(ctx context.Context) error {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get(securityHeader); len(v) != 1 || v[0] != "true" {
		return fmt.Errorf("%w: security header missing from request", agent.ErrBadRequest)
	}
	return nil
}
