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
// With StormWorkloads set (`--storm-workloads`, 10000 by default on the
// command line) it then runs a rotation storm: StormAgents node agents in
// the bench process, each the real agent core (agent.Client attested over
// TLS with a token of its own, then mTLS; agent.Manager renewing at
// half-life ± 10 %), subscribe their share of the workloads all at once
// (unix-attested identities, one service account each) with SVIDs of
// StormTTL. It reports the time to fetch all SVIDs (the cold start), the
// time from the first renewal to the last when they all come due together
// (the storm), the CA's CPU time per certificate, the agents' batching and
// their heap per workload. Its lines come before the last line.
//
// A run in which any certificate failed says so and returns an error, as
// does a storm with any failed renewal.
package bench
