package server

import (
	"context"
	"errors"
	"log/slog"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/lanyard-id/lanyard/ca"
	"github.com/lanyard-id/lanyard/ca/kube"
	"github.com/lanyard-id/lanyard/ca/tokens"
	"github.com/lanyard-id/lanyard/storage"
)

// Errors of the gRPC layer itself.
var (
	// ErrOverloaded: too many requests in flight, or a rate limit hit.
	ErrOverloaded = errors.New("overloaded, retry later")
	// ErrNoClientCert: a call that needs an agent SVID came without one.
	ErrNoClientCert = errors.New("client certificate required")
	// ErrRequestTooLarge: a request of a method callable without a client
	// certificate is over Limits.UnauthenticatedMaxMsgSize. Maps to
	// codes.ResourceExhausted, as gRPC's own message size limit.
	ErrRequestTooLarge = errors.New("request too large")
	// ErrTooManyStreams: the peer has as many WatchBundle streams open as
	// Limits allows. Maps to codes.ResourceExhausted.
	ErrTooManyStreams = errors.New("too many streams open")
)

// toStatus is the one mapping from pipeline errors to gRPC status, as
// DESIGN.md says: bad request or CSR → InvalidArgument; token invalid,
// expired or wrong audience → Unauthenticated; identity or SAN not allowed
// → PermissionDenied; overload → ResourceExhausted; store, Vault or
// Kubernetes down (tokens.ErrUnavailable, tokens.ErrKeysTooOld,
// kube.ErrUnavailable), CA not
// ready → Unavailable; anything else → Internal
// with a generic message. A security failure is never Internal.
func toStatus(err error) *status.Status {
	if err == nil {
		return status.New(codes.OK, "")
	}
	if s, ok := status.FromError(err); ok {
		return s
	}
	switch {
	case errors.Is(err, ca.ErrInvalidCSR), errors.Is(err, ca.ErrInvalidRequest):
		return status.New(codes.InvalidArgument, err.Error())
	case errors.Is(err, tokens.ErrUnavailable), errors.Is(err, tokens.ErrKeysTooOld), errors.Is(err, storage.ErrUnavailable),
		errors.Is(err, storage.ErrClosed), errors.Is(err, ca.ErrNotReady), errors.Is(err, kube.ErrUnavailable):
		return status.New(codes.Unavailable, "temporarily unavailable, retry")
	case errors.Is(err, tokens.ErrInvalidToken), errors.Is(err, tokens.ErrExpired),
		errors.Is(err, tokens.ErrWrongAudience), errors.Is(err, tokens.ErrUnknownCluster),
		errors.Is(err, ErrNoClientCert):
		return status.New(codes.Unauthenticated, err.Error())
	case errors.Is(err, ca.ErrPermissionDenied):
		return status.New(codes.PermissionDenied, err.Error())
	case errors.Is(err, ErrOverloaded), errors.Is(err, ErrRequestTooLarge), errors.Is(err, ErrTooManyStreams):
		return status.New(codes.ResourceExhausted, err.Error())
	case errors.Is(err, context.Canceled):
		return status.New(codes.Canceled, "request canceled")
	case errors.Is(err, context.DeadlineExceeded):
		return status.New(codes.DeadlineExceeded, "deadline exceeded")
	default:
		return status.New(codes.Internal, "internal error")
	}
}

// statusErr maps err and logs what the client does not see. Unavailable
// and Internal are logged at error level with the full cause; rejections
// at info level.
func statusErr(log *slog.Logger, method string, err error) error {
	s := toStatus(err)
	switch s.Code() {
	case codes.Internal, codes.Unavailable:
		log.Error("request failed", "method", method, "code", s.Code().String(), "error", err)
	default:
		log.Info("request rejected", "method", method, "code", s.Code().String(), "reason", err.Error())
	}
	return s.Err()
}
