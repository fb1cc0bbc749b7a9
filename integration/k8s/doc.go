// Package k8s holds Lanyard's end-to-end tests against real Kubernetes API
// servers: two control planes (etcd + kube-apiserver, built by `make
// k8s-tools`, see integration/harness/kube) and one `lanyard ca` started
// from a YAML configuration as in production. Cluster "east" is verified
// offline through the API server's OIDC discovery and key set, with the
// bound-pod check; cluster "west" through TokenReview, with a short
// positive cache. The CA reaches both API servers as its own service
// account, whose RBAC allows only `create tokenreviews` and `get, list,
// watch pods`.
//
// Tokens are real: TokenRequest bound to pods that are bound to nodes, so
// they carry the kubernetes.io pod and node claims. Where the API server
// cannot issue the token a test needs (an exp in the past), the test signs
// a real token's claims again with the API server's own service-account
// key, and says so.
//
// The tests never skip: without the binaries they fail and name the make
// target.
package k8s
