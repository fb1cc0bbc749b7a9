// Package sds serves Envoy's Secret Discovery Service (SDS v3) on the node
// agent's socket: each workload's X.509-SVID and the trust bundles, pushed
// on every rotation and bundle change.
//
// # Who is calling
//
// Every call is identified first (Identifier: the bearer token Envoy sends
// with file-based call credentials, else the attested socket peer), then
// subscribed to that workload's identity (agent.Identities). A caller that
// cannot be identified, or whose identity the CA refused, gets
// PermissionDenied. Resources are looked up in the caller's own
// subscription only, so no request can reach another workload's key.
//
// # Resources
//
//	default              TlsCertificate: the caller's chain and PKCS#8 key (PEM)
//	ROOTCA               ValidationContext, trusted_ca: the caller's trust domain roots
//	ALL                  ValidationContext, custom_validator_config
//	                     envoy.tls.cert_validator.spiffe: one entry per trust domain
//	spiffe://td/path     TlsCertificate, when it is the caller's own SPIFFE ID
//	spiffe://td, td      ValidationContext, trusted_ca: that trust domain's roots
//	(no names)           everything the caller has, named as SPIRE names it:
//	                     its SVID by SPIFFE ID, each bundle by spiffe://<td>
//
// Any other name (unknown, another workload's SPIFFE ID, a trust domain
// without a bundle) is left out of the response and logged; the stream
// stays up. (SPIRE ends the stream with InvalidArgument instead, which
// sends Envoy into a reconnect loop for a name that cannot appear.)
//
// # Protocol (state of the world)
//
// A response carries the type_url of tls.v3.Secret, a version_info derived
// from its content (a hash of names, chains and roots, never keys: equal
// content, equal version) and a fresh random nonce. A request whose
// response_nonce is not the last one sent is stale and ignored whole. A
// request answering the last nonce with that version and no error_detail
// is an ACK; with error_detail (or another version) it is a NACK, logged
// and counted; neither is answered. The server sends a response on the
// first request, on each change of resource_names (the whole current set,
// even if unchanged, since the client may have dropped a name it
// subscribes to again), and on a rotation or bundle change when the content
// differs from the last response. So a NACKed version is never sent again
// in a loop; the next change is. A first SVID
// that is still pending is not answered at all (never an empty
// certificate); the other names are answered as soon as they exist. The
// first request of a new stream is always answered, whatever version it
// claims, because the server cannot know what the client subscribed to
// before.
//
// FetchSecrets (unary) answers the current state, waiting up to
// Config.FetchTimeout for a pending first SVID; nonce is empty, as in REST
// xDS. DeltaSecrets is Unimplemented.
//
// # Why not go-control-plane's server and cache
//
// Its server and snapshot cache key resources by the client-supplied node
// id: any client could name any node and read its keys. Here the resources
// depend on who the caller is (attested or token-identified), and a stream
// lives exactly as long as that caller's subscription. So the package uses
// go-control-plane's types and writes the per-stream state machine itself,
// as SPIRE's pkg/agent/endpoints/sdsv3 does.
//
// Package sdstest is an SDS client that follows the protocol as Envoy does,
// for tests.
package sds
