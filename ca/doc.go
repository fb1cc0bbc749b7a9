// Package ca is Lanyard's issuing pipeline: it turns an authenticated
// Kubernetes identity and a CSR into a recorded X.509-SVID.
//
// A request goes through one pipeline, whatever API it came from:
//
//	authorize (Policy) → validate the CSR → sign → record → answer
//
// Authentication happens before, in the API that knows the credential
// (ca/tokens, ca/server); the pipeline starts from a Subject that is
// already trusted.
//
//   - Identities: WorkloadID derives spiffe://<td>/ns/<ns>/sa/<sa> and
//     AgentID spiffe://<td>/lanyard/agent/<cluster>/<node>, refusing any
//     name that is not a valid Kubernetes name, so that no crafted name can
//     reach another identity's path.
//   - Policy grants extra DNS and IP SANs and TTL caps per service account,
//     and denies identities and agents.
//   - ParseCSR and ValidateCSR accept only ECDSA P-256/P-384, RSA 2048–4096
//     and Ed25519 keys (the size is checked before the signature), a valid
//     self-signature, at most one URI SAN equal to the caller's ID, only
//     granted DNS and IP SANs, and no CA powers or unknown critical
//     extensions. Input is bounded by MaxCSRSize.
//   - CA signs leaves with the replica's intermediate and returns a
//     certificate only once its Recorder has made it durable: nothing
//     leaves the CA unrecorded.
//   - Authority keeps this replica's intermediate, minted by an
//     upstream.Authority, fresh (renewed at half-life, retried with
//     backoff) and publishes the trust bundle with a sequence number and a
//     change channel.
//
// Errors wrap ErrInvalidCSR, ErrInvalidRequest, ErrPermissionDenied or
// ErrNotReady; the gRPC boundary maps each to one status code.
package ca
