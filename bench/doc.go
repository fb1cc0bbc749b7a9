// Package bench is Lanyard's issuance benchmark (`lanyard bench`, `make bench`).
//
// Run builds nothing in-process: it starts the lanyard binary as a child
// process (`lanyard dev` on 127.0.0.1 with a fresh state directory), attests
// node agents over gRPC/TLS exactly as a real agent does, and drives
// BatchSignSVIDs over mTLS with the agent SVIDs from many concurrent callers.
// Every entry carries a freshly minted development service-account token,
// so the CA does the full per-certificate work: RS256 JWT verification,
// policy, CSR check, signing and recording in its store.
//
// It reports certificates per second, per-RPC latency percentiles, the CA
// process's CPU time and allocations per certificate, and compares the
// throughput with a crypto floor: the same cryptographic work (JWT
// verification, CSR signature check, leaf signature) done in-process on all
// cores with nothing else. The last line of the report has a fixed form that
// scripts parse:
//
//	issuance: <N> certs/s p50=<ms>ms p99=<ms>ms floor=<F> certs/s ratio=<N/F>
//
// A run in which any certificate failed says so and returns an error.
package bench
