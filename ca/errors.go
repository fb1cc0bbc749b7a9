package ca

import "errors"

// Errors the issuing pipeline returns, wrapped with a reason. The gRPC
// boundary (ca/server) maps each to one status code.
var (
	// ErrInvalidCSR: the CSR cannot be parsed, its signature does not
	// verify, its key type or size is not allowed, or it asks for CA
	// powers. codes.InvalidArgument.
	ErrInvalidCSR = errors.New("invalid CSR")
	// ErrInvalidRequest: a malformed request other than the CSR (TTL over
	// the maximum, bad names). codes.InvalidArgument.
	ErrInvalidRequest = errors.New("invalid request")
	// ErrPermissionDenied: the caller is authenticated but may not have
	// this identity or SAN, or is on the deny list. codes.PermissionDenied.
	ErrPermissionDenied = errors.New("permission denied")
	// ErrNotReady: the CA has no usable signing key yet. codes.Unavailable.
	ErrNotReady = errors.New("CA not ready")
)
