package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestStatus(t *testing.T) {
	for _, tt := range []struct {
		name string
		err  error
		code codes.Code
		msg  string
	}{
		{"bad request", fmt.Errorf("%w: security header missing from request", ErrBadRequest), codes.InvalidArgument, "security header missing from request"},
		{"unimplemented", fmt.Errorf("JWT-SVIDs are %w", ErrUnimplemented), codes.Unimplemented, "JWT-SVIDs are not served by this agent"},
		{"not identified", fmt.Errorf("%w: uid 1000", ErrNotIdentified), codes.PermissionDenied, "workload could not be identified"},
		{"denied", fmt.Errorf("%w: PermissionDenied: no", ErrDenied), codes.PermissionDenied, "identity refused by the CA"},
		{"token expired", ErrCredentialExpired, codes.Unauthenticated, "reconnect"},
		{"not ready", ErrNotReady, codes.Unavailable, "retry later"},
		{"internal", fmt.Errorf("%w: marshal /secret/path", ErrInternal), codes.Internal, "internal error"},
		{"canceled", context.Canceled, codes.Canceled, ""},
		{"deadline", context.DeadlineExceeded, codes.DeadlineExceeded, ""},
		{"anything else is unavailable", errors.New("disk on fire at /secret/path"), codes.Unavailable, "retry later"},
		{"a status from below is not passed through", status.Error(codes.PermissionDenied, "/secret/path"), codes.Unavailable, "retry later"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			log, logs := newTestLogger()
			st := status.Convert(Status(log, "test call", tt.err))
			require.Equal(t, tt.code, st.Code())
			require.Contains(t, st.Message(), tt.msg)
			require.NotContains(t, st.Message(), "secret")
			if tt.code != codes.Canceled && tt.code != codes.DeadlineExceeded {
				require.Contains(t, logs.String(), `msg="test call"`, "the cause is logged")
			}
		})
	}
	require.NoError(t, Status(slog.New(slog.DiscardHandler), "ok", nil))
}
