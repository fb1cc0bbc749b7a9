// Package kube holds the CA's Kubernetes lookups, all built
// on client-go informers (a watch per resource kind, never a request per
// call):
//
//   - PodIndex answers "does a pod of this service account run on this
//     node?" from an in-memory index of the cluster's pods. The Istio API
//     (ca/server) uses it to decide whether a node proxy such as ztunnel may
//     ask for a certificate on behalf of a workload (ImpersonatedIdentity).
//   - BoundPodVerifier wraps a cluster's token verifier: a pod-bound token is
//     accepted only while its pod (UID from the token) is in the PodIndex,
//     so that offline JWKS verification refuses tokens of deleted pods
//     without a request per token.
//
// The Istio controllers (root ConfigMap, istiod's certificate) are in
// ca/istio.
//
// Errors that mean "the Kubernetes API cannot answer now" wrap
// ErrUnavailable, which the gRPC boundary maps to codes.Unavailable.
package kube
