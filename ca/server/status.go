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
	// Served as codes.ResourceExhausted.
	ErrOverloaded = errors.New("overloaded, retry later")
	// ErrNoClientCert: a call that needs an agent SVID came without one.
	// Served as codes.Unauthenticated.
	ErrNoClientCert = errors.New("client certificate required")
	// ErrRequestTooLarge: a request of a method callable without a client
	// certificate is over Limits.UnauthenticatedMaxMsgSize. Served as
	// codes.ResourceExhausted, as gRPC's own message size limit.
	ErrRequestTooLarge = errors.New("request too large")
	// ErrTooManyStreams: the peer has as many WatchBundle streams open as
	// Limits allows. Served as codes.ResourceExhausted.
	ErrTooManyStreams = errors.New("too many streams open")
	// ErrStopping: the server is shutting down; the client reconnects to
	// another replica. Served as codes.Unavailable.
	ErrStopping = errors.New("CA is shutting down, reconnect")
	// errPanic: a handler panicked (recovered, logged with its stack).
	// Served as codes.Internal.
	errPanic = errors.New("panic in handler")
)

// toStatus is the one mapping from pipeline errors to gRPC status, as
// DESIGN.md says: bad request or CSR → InvalidArgument; token invalid,
// expired or wrong audience → Unauthenticated; identity or SAN not allowed
// → PermissionDenied; a record an admin asked for is absent → NotFound;
// overload → ResourceExhausted; store, Vault or
// Kubernetes down (tokens.ErrUnavailable, tokens.ErrKeysTooOld,
// kube.ErrUnavailable), CA not
// ready or stopping → Unavailable; anything else (a status error from
// below included: it is never passed through) → Internal with a generic
// message. A security failure is never Internal.
func toStatus(err error) *status.Status {
	if err == nil {
		return status.New(codes.OK, "")
	}
	switch {
	case errors.Is(err, ca.ErrInvalidCSR), errors.Is(err, ca.ErrInvalidRequest):
		return status.New(codes.InvalidArgument, err.Error())
	case errors.Is(err, tokens.ErrUnavailable), errors.Is(err, tokens.ErrKeysTooOld), errors.Is(err, storage.ErrUnavailable),
		errors.Is(err, storage.ErrClosed), errors.Is(err, ca.ErrNotReady), errors.Is(err, kube.ErrUnavailable):
		return status.New(codes.Unavailable, "temporarily unavailable, retry")
	case errors.Is(err, ErrStopping):
		return status.New(codes.Unavailable, ErrStopping.Error())
	case errors.Is(err, tokens.ErrInvalidToken), errors.Is(err, tokens.ErrExpired),
		errors.Is(err, tokens.ErrWrongAudience), errors.Is(err, tokens.ErrUnknownCluster),
		errors.Is(err, ErrNoClientCert):
		return status.New(codes.Unauthenticated, err.Error())
	case errors.Is(err, ca.ErrPermissionDenied):
		return status.New(codes.PermissionDenied, err.Error())
	case errors.Is(err, storage.ErrNotFound):
		return status.New(codes.NotFound, err.Error())
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

// statusErr maps err and logs what the client does not see.
func statusErr(log *slog.Logger, method string, err error) error {
	s := toStatus(err)
	logRefusal(log, s, "request", err, "method", method)
	return s.Err()
}

// logRefusal is the one logging choice for a refused call or batch entry:
// Unavailable and Internal at error level with the full cause ("<what>
// failed"); rejections at info level ("<what> rejected").
func logRefusal(log *slog.Logger, s *status.Status, what string, err error, attrs ...any) {
	attrs = append(attrs, "code", s.Code().String())
	switch s.Code() {
	case codes.Internal, codes.Unavailable:
		log.Error(what+" failed", append(attrs, "error", err)...)
	default:
		log.Info(what+" rejected", append(attrs, "reason", err.Error())...)
	}
}
