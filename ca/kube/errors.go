package kube

import "errors"

// ErrUnavailable: the Kubernetes API cannot be asked right now (an
// informer has not synced yet, or a request failed), so the answer is not
// known. Callers retry; the gRPC boundary maps it to codes.Unavailable.
var ErrUnavailable = errors.New("kubernetes API unavailable")
