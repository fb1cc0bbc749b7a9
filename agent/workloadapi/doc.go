// Package workloadapi serves the SPIFFE Workload API on the node agent's
// Unix socket, next to Envoy SDS, for SPIFFE-aware applications (the
// go-spiffe, java-spiffe, py-spiffe clients, spiffe-helper):
//
//	ws, _ := workloadapi.New(workloadapi.Config{
//		Identifier: identifier, // *attest.Identifier
//		Identities: manager,    // *agent.Manager
//	})
//	srv := grpc.NewServer(grpc.Creds(attest.NewCredentials("")))
//	ws.Register(srv)
//
// FetchX509SVID and FetchX509Bundles are served; FetchJWTSVID,
// FetchJWTBundles, ValidateJWTSVID and the WIT-SVID calls answer
// Unimplemented for now.
//
// Every call must carry the metadata "workload.spiffe.io: true"; without
// it the call fails with InvalidArgument "security header missing from
// request", as the spec and SPIRE do. The caller is then identified (by
// its projected token or by attestation of the socket peer) and subscribed
// to its identity; each stream gets a first response as soon as the SVID
// and its trust domain's bundle are there, never an empty one, then one on
// every rotation or bundle change. A response equal to the previous one is
// not sent again.
//
// Errors: a caller that cannot be identified, or whose identity the CA
// refused, gets PermissionDenied (the spec's "not entitled"); agent-side
// trouble (Kubernetes API not synced, agent not ready or shutting down)
// gets Unavailable, which clients retry with backoff. Details go to the
// log; keys and tokens never do.
//
// Responses follow SPIRE: x509_svid is the DER chain, leaf first;
// x509_svid_key the PKCS#8 DER key; bundle the DER roots of the SVID's
// trust domain; federated_bundles every other trust domain's roots keyed
// by its SPIFFE ID ("spiffe://example.org").
package workloadapi
