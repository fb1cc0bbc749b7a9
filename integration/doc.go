// Package integration holds Lanyard's end-to-end tests: they build the real
// lanyard binary, run it as separate processes on 127.0.0.1 (one
// `lanyard dev` per test, in its own temporary directory) and talk to it
// only through its public surfaces: the gRPC CA API, the `lanyard dev
// token` CLI, bundle.pem, /healthz, /readyz, /metrics and the SQLite store
// file (read-only); the node agent suites (agent_test.go, sds_test.go,
// agent_fault_test.go) use its Unix socket with the official go-spiffe
// Workload API client and agent/sds/sdstest, and run `lanyard agent` as
// separate processes to kill and restart them. TestAgentUnixUsers runs
// clients as other users and so needs root.
//
// The tests never skip and run in `go test ./...`. Set LANYARD_BIN to a
// prebuilt binary to skip the build. The process harness lives in
// integration/harness so that later suites (agent, Istio, Kubernetes) reuse
// it.
package integration
