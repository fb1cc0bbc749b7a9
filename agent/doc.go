// Package agent is the Lanyard node agent's core: the CA client (attest
// with the agent's projected token, then mTLS with the agent SVID), the
// workload SVID cache with batched rotation at half-life ± 10 %, backoff
// and an optional disk cache, and the Unix socket the SDS (agent/sds) and
// SPIFFE Workload API (agent/workloadapi) servers share.
//
// Workloads are identified by agent/attest; the servers consume the agent
// through the Identities and Subscription interfaces in workload.go.
package agent
