// Package kube holds the CA's Kubernetes controllers and lookups, all built
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
//   - RootCertPublisher keeps the istio-ca-root-cert ConfigMap (key
//     root-cert.pem) in every namespace equal to the CA's trust bundle,
//     which is where istio-agent reads the root it trusts.
//   - IstiodCert issues istiod's serving certificate through the CA pipeline
//     and keeps it, with its key and the roots, in the istiod-tls Secret, as
//     Istio requires when istiod's own CA is turned off.
//
// Errors that mean "the Kubernetes API cannot answer now" wrap
// ErrUnavailable, which the gRPC boundary maps to codes.Unavailable.
package kube
