// Package istio is Lanyard's Istio support on the Kubernetes side, beside
// Istio's certificate API itself (istio.v1.auth.IstioCertificateService,
// served with the CA's other gRPC services in ca/server/istio.go). It is
// wired by the istio: section of the CA's configuration
// (cmd/lanyard/istio.go):
//
//   - RootCertPublisher keeps the istio-ca-root-cert ConfigMap (key
//     root-cert.pem) in every namespace equal to the CA's trust bundle,
//     which is where istio-agent reads the root it trusts.
//   - IstiodCert issues istiod's serving certificate through the CA pipeline
//     and keeps it, with its key and the roots, in the istiod-tls Secret, as
//     Istio requires when istiod's own CA is turned off.
//
// Impersonation by node proxies (ztunnel) is answered from the cluster's
// kube.PodIndex, the same pod informer the agents' checks use.
//
// Errors that mean "the Kubernetes API cannot answer now" wrap
// kube.ErrUnavailable, which the gRPC boundary maps to codes.Unavailable.
package istio
