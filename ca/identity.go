package ca

import (
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"k8s.io/apimachinery/pkg/util/validation"
)

// WorkloadID derives the SPIFFE ID of a Kubernetes service account:
// spiffe://<td>/ns/<namespace>/sa/<name>. Namespace and name must be valid
// Kubernetes names, so that no two service accounts share an ID and no
// crafted name can reach into another path.
func WorkloadID(td spiffeid.TrustDomain, namespace, serviceAccount string) (spiffeid.ID, error) {
	if td.IsZero() {
		return spiffeid.ID{}, fmt.Errorf("%w: empty trust domain", ErrInvalidRequest)
	}
	if errs := validation.IsDNS1123Label(namespace); len(errs) > 0 {
		return spiffeid.ID{}, fmt.Errorf("%w: namespace %q is not a valid Kubernetes namespace", ErrInvalidRequest, namespace)
	}
	if errs := validation.IsDNS1123Subdomain(serviceAccount); len(errs) > 0 {
		return spiffeid.ID{}, fmt.Errorf("%w: service account %q is not a valid Kubernetes name", ErrInvalidRequest, serviceAccount)
	}
	return spiffeid.FromSegments(td, "ns", namespace, "sa", serviceAccount)
}

// AgentID derives the SPIFFE ID of a node agent:
// spiffe://<td>/lanyard/agent/<cluster>/<node>.
func AgentID(td spiffeid.TrustDomain, cluster, node string) (spiffeid.ID, error) {
	if td.IsZero() {
		return spiffeid.ID{}, fmt.Errorf("%w: empty trust domain", ErrInvalidRequest)
	}
	if errs := validation.IsDNS1123Subdomain(cluster); len(errs) > 0 {
		return spiffeid.ID{}, fmt.Errorf("%w: cluster name %q is not a valid name", ErrInvalidRequest, cluster)
	}
	if errs := validation.IsDNS1123Subdomain(node); len(errs) > 0 {
		return spiffeid.ID{}, fmt.Errorf("%w: node name %q is not a valid Kubernetes name", ErrInvalidRequest, node)
	}
	return spiffeid.FromSegments(td, "lanyard", "agent", cluster, node)
}

// ParseAgentID returns the cluster and node of an agent SPIFFE ID of trust
// domain td, or an error when id is not one.
func ParseAgentID(td spiffeid.TrustDomain, id spiffeid.ID) (cluster, node string, err error) {
	if !id.MemberOf(td) {
		return "", "", fmt.Errorf("%w: %s is not in trust domain %s", ErrPermissionDenied, id, td)
	}
	segs := strings.Split(strings.TrimPrefix(id.Path(), "/"), "/")
	if len(segs) != 4 || segs[0] != "lanyard" || segs[1] != "agent" {
		return "", "", fmt.Errorf("%w: %s is not an agent identity", ErrPermissionDenied, id)
	}
	// Only what AgentID could have made is an agent ID.
	if want, err := AgentID(td, segs[2], segs[3]); err != nil || want != id {
		return "", "", fmt.Errorf("%w: %s is not a valid agent identity", ErrPermissionDenied, id)
	}
	return segs[2], segs[3], nil
}

// ServingID is the SPIFFE ID in the CA's own serving certificate.
func ServingID(td spiffeid.TrustDomain) spiffeid.ID {
	return spiffeid.RequireFromSegments(td, "lanyard", "ca")
}
