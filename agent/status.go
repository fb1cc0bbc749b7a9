package agent

import (
	"context"
	"errors"
	"log/slog"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Errors of the agent's own servers (SDS and the Workload API), beside the
// Subscription errors in workload.go. Status maps them all.
var (
	// ErrBadRequest: the caller's request is malformed (a missing security
	// header, a wrong type URL). Served as codes.InvalidArgument with the
	// error's text.
	ErrBadRequest = errors.New("bad request")
	// ErrUnimplemented: the call is not served by this agent. Served as
	// codes.Unimplemented with the error's text.
	ErrUnimplemented = errors.New("not served by this agent")
	// ErrNotReady: what the caller asked for is not there yet (secrets
	// still being fetched), or the agent is stopping. Served as
	// codes.Unavailable: the caller retries.
	ErrNotReady = errors.New("not ready, retry later")
	// ErrInternal: a bug in the agent. Served as codes.Internal.
	ErrInternal = errors.New("internal error")
)

// Status is the agent's one mapping from errors to the gRPC status a
// workload gets, shared by SDS and the Workload API. It logs msg with the
// cause (the workload gets a short message), at a level by code, so that a
// caller never logs and returns the same error. Anything unknown is
// trouble on the agent's side that a retry may fix: codes.Unavailable.
func Status(log *slog.Logger, msg string, err error) error {
	var (
		code  codes.Code
		text  string
		level = slog.LevelWarn
	)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return status.FromContextError(err).Err() // the caller went away: nothing to log
	case errors.Is(err, ErrBadRequest):
		code, text = codes.InvalidArgument, unwrapText(err, ErrBadRequest)
	case errors.Is(err, ErrUnimplemented):
		code, text, level = codes.Unimplemented, err.Error(), slog.LevelInfo
	case errors.Is(err, ErrNotIdentified):
		code, text = codes.PermissionDenied, "workload could not be identified"
	case errors.Is(err, ErrDenied):
		code, text = codes.PermissionDenied, "identity refused by the CA"
	case errors.Is(err, ErrTooManyPending):
		code, text = codes.ResourceExhausted, "too many unverified tokens pending, retry"
	case errors.Is(err, ErrCredentialExpired):
		code, text, level = codes.Unauthenticated, "token no longer accepted, reconnect with a fresh one", slog.LevelInfo
	case errors.Is(err, ErrNotReady):
		code, text = codes.Unavailable, "not ready, retry later"
	case errors.Is(err, ErrInternal):
		code, text, level = codes.Internal, "internal error", slog.LevelError
	default:
		code, text, level = codes.Unavailable, "workload identity unavailable, retry later", slog.LevelError
	}
	log.Log(context.Background(), level, msg, "code", code.String(), "error", err)
	return status.Error(code, text)
}

// unwrapText is err's text without the sentinel's prefix ("bad request: x"
// → "x"), for messages a client reads.
func unwrapText(err, sentinel error) string {
	s, p := err.Error(), sentinel.Error()+": "
	if len(s) > len(p) && s[:len(p)] == p {
		return s[len(p):]
	}
	return s
}
