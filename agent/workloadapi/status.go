package workloadapi

import (
	"context"
	"errors"
	"log/slog"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/lanyard-id/lanyard/agent"
)

// securityHeader must be sent, with the value "true", on every Workload
// API call, so that a process tricked into relaying a request (SSRF) cannot
// reach the API.
const securityHeader = "workload.spiffe.io"

// errInternal marks failures that are the agent's own bug.
var errInternal = errors.New("internal error")

// checkSecurityHeader refuses calls without the security header, with the
// code and message of the spec and SPIRE. Like SPIRE, exactly one value,
// "true", is accepted.
func checkSecurityHeader(ctx context.Context) error {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get(securityHeader); len(v) != 1 || v[0] != "true" {
		return status.Error(codes.InvalidArgument, "security header missing from request")
	}
	return nil
}

// toStatus maps an error to the status the client gets, and logs the
// details the client does not get. Clients retry with backoff on
// everything but InvalidArgument, so agent-side trouble is Unavailable.
func toStatus(log *slog.Logger, msg string, err error) error {
	switch {
	case errors.Is(err, agent.ErrNotIdentified):
		log.Warn(msg, "error", err)
		return status.Error(codes.PermissionDenied, "workload could not be identified")
	case errors.Is(err, agent.ErrDenied):
		log.Warn(msg, "error", err)
		return status.Error(codes.PermissionDenied, "identity refused by the CA")
	case errors.Is(err, agent.ErrTooManyPending):
		log.Warn(msg, "error", err)
		return status.Error(codes.ResourceExhausted, "too many unverified tokens pending, retry")
	case errors.Is(err, agent.ErrCredentialExpired):
		log.Info(msg, "error", err)
		return status.Error(codes.Unauthenticated, "token no longer accepted, reconnect with a fresh one")
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, "request canceled")
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, "deadline exceeded")
	case errors.Is(err, errInternal):
		log.Error(msg, "error", err)
		return status.Error(codes.Internal, "internal error")
	default:
		log.Error(msg, "error", err)
		return status.Error(codes.Unavailable, "workload identity unavailable, retry later")
	}
}
