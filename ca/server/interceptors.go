package server

import (
	"context"
	"log/slog"
	"runtime/debug"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// unaryInterceptor recovers panics (logged with the stack, answered
// Internal), and records latency and rejections.
func unaryInterceptor(log *slog.Logger, m *Metrics) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
		start := time.Now()
		defer func() {
			if r := recover(); r != nil {
				m.PanicsRecovered.Inc()
				log.Error("panic in handler", "method", info.FullMethod, "panic", r, "stack", string(debug.Stack()))
				resp, err = nil, toStatus(errPanic).Err()
			}
			m.observe(info.FullMethod, start)
			if code := status.Code(err); code != codes.OK {
				m.Rejected.WithLabelValues(info.FullMethod, code.String()).Inc()
			}
		}()
		return handler(ctx, req)
	}
}

// streamInterceptor recovers panics in stream handlers.
func streamInterceptor(log *slog.Logger, m *Metrics) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
		defer func() {
			if r := recover(); r != nil {
				m.PanicsRecovered.Inc()
				log.Error("panic in stream handler", "method", info.FullMethod, "panic", r, "stack", string(debug.Stack()))
				err = toStatus(errPanic).Err()
			}
		}()
		return handler(srv, ss)
	}
}
