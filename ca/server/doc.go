// Package server is the CA's gRPC face, and only that: the Lanyard CA API
// (cav1.CAService: AttestAgent, BatchSignSVIDs over mTLS with an agent
// SVID, GetBundle, WatchBundle), Istio's IstioCertificateService on the
// same port (istio.go) and the gRPC health service, behind interceptors
// (panic recovery, latency and rejection metrics), the overload limiter and
// the per-identity rate limit of the Istio API.
//
// A handler decodes the request, authenticates the caller and calls the
// issuing pipeline (package ca); toStatus in status.go is the one place an
// error becomes a gRPC code, and logRefusal the one place a refusal is
// logged. The TLS serving certificate is ca/serving; the HTTP endpoints
// (/healthz, /readyz, /metrics, pprof) are ca/health; the bundle file is
// ca/bundlefile.
package server
