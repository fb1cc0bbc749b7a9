// Command lanyardctl operates a Lanyard CA through its admin API
// (proto/lanyard/admin/v1): certificates, agents, the identity deny list,
// the bundle, CA status and the audit log. See docs/operations.md.
//
// Exit codes, for scripts:
//
//	0  success
//	1  any other error
//	2  usage: unknown command or flag, bad argument
//	3  not found (serial, agent, identity)
//	4  refused: not authenticated or not an admin
//	5  CA unavailable (not reachable, not ready, store down)
//	6  the CA refused the request as invalid
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Exit codes; keep the package comment in step.
const (
	exitOK          = 0
	exitError       = 1
	exitUsage       = 2
	exitNotFound    = 3
	exitRefused     = 4
	exitUnavailable = 5
	exitInvalid     = 6
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRoot().ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "lanyardctl:", errorMessage(err))
	}
	os.Exit(exitCode(err))
}

// usageError marks a mistake in the command line.
type usageError struct{ error }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// exitCode maps an error to the documented exit codes.
func exitCode(err error) int {
	if err == nil {
		return exitOK
	}
	var ue usageError
	if errors.As(err, &ue) || strings.HasPrefix(err.Error(), "unknown command ") {
		// cobra reports an unknown subcommand as a plain error.
		return exitUsage
	}
	st, ok := status.FromError(err) // also finds a wrapped status
	if !ok {
		return exitError
	}
	switch st.Code() {
	case codes.NotFound:
		return exitNotFound
	case codes.Unauthenticated, codes.PermissionDenied:
		return exitRefused
	case codes.Unavailable, codes.DeadlineExceeded:
		return exitUnavailable
	case codes.InvalidArgument:
		return exitInvalid
	default:
		return exitError
	}
}

// errorMessage is err without gRPC's "rpc error: code = ... desc =" noise.
func errorMessage(err error) string {
	if st, ok := status.FromError(err); ok {
		return fmt.Sprintf("%s (%s)", st.Message(), st.Code())
	}
	return err.Error()
}
