package tokens

import (
	"fmt"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4/jwt"
	"k8s.io/apimachinery/pkg/util/validation"
)

// MaxTokenSize is the largest token, in bytes, any verifier here accepts.
// Longer tokens are rejected before they are parsed or sent anywhere.
const MaxTokenSize = 16 << 10

// checkRequest refuses what no verifier should spend work on: no audience
// to check, an empty token, or one over MaxTokenSize.
func checkRequest(token, audience string) error {
	if audience == "" {
		return fmt.Errorf("%w: no audience requested", ErrWrongAudience)
	}
	if token == "" {
		return fmt.Errorf("%w: empty token", ErrInvalidToken)
	}
	if len(token) > MaxTokenSize {
		return fmt.Errorf("%w: token larger than %d bytes", ErrInvalidToken, MaxTokenSize)
	}
	return nil
}

// serviceAccountPrefix starts the subject (and TokenReview username) of
// every Kubernetes service-account token.
const serviceAccountPrefix = "system:serviceaccount:"

// maxUIDLength bounds the UIDs taken from a token; Kubernetes UIDs are
// 36-character UUIDs.
const maxUIDLength = 128

// k8sRef is a {name, uid} reference inside the kubernetes.io claim.
type k8sRef struct {
	Name string `json:"name,omitempty"`
	UID  string `json:"uid,omitempty"`
}

// k8sClaim is the private kubernetes.io claim of a projected token. Fields
// are in the order Kubernetes serializes them (alphabetical).
type k8sClaim struct {
	Namespace      string           `json:"namespace,omitempty"`
	Node           *k8sRef          `json:"node,omitempty"`
	Pod            *k8sRef          `json:"pod,omitempty"`
	Secret         *k8sRef          `json:"secret,omitempty"`
	ServiceAccount *k8sRef          `json:"serviceaccount,omitempty"`
	WarnAfter      *jwt.NumericDate `json:"warnafter,omitempty"`
}

// privateClaims holds the claims of a projected token that jwt.Claims does
// not. Legacy secret-based tokens have no kubernetes.io claim.
type privateClaims struct {
	Kubernetes *k8sClaim `json:"kubernetes.io,omitempty"`
}

// identity is what a verifier learned about a service account before it is
// turned into a ServiceAccount.
type identity struct {
	namespace, name, uid string
	podName, podUID      string
	nodeName, nodeUID    string
}

// serviceAccountUsername is the subject (and username) Kubernetes gives a
// service account.
func serviceAccountUsername(namespace, name string) string {
	return serviceAccountPrefix + namespace + ":" + name
}

// parseServiceAccountUsername splits "system:serviceaccount:<ns>:<name>".
// It reports false for anything else, including invalid names.
func parseServiceAccountUsername(s string) (namespace, name string, ok bool) {
	rest, found := strings.CutPrefix(s, serviceAccountPrefix)
	if !found {
		return "", "", false
	}
	namespace, name, found = strings.Cut(rest, ":")
	if !found || validNamespace(namespace) != nil || validObjectName(name) != nil {
		return "", "", false
	}
	return namespace, name, true
}

// validNamespace reports whether ns is a valid Kubernetes namespace name
// (a DNS-1123 label).
func validNamespace(ns string) error {
	if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
		return fmt.Errorf("namespace %.64q: %s", ns, errs[0])
	}
	return nil
}

// validObjectName reports whether name is a valid name for a service
// account, pod or node (a DNS-1123 subdomain).
func validObjectName(name string) error {
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return fmt.Errorf("name %.64q: %s", name, errs[0])
	}
	return nil
}

// validUID reports whether uid is acceptable; empty is allowed only when
// optional.
func validUID(uid string, optional bool) error {
	switch {
	case uid == "" && !optional:
		return fmt.Errorf("missing uid")
	case len(uid) > maxUIDLength:
		return fmt.Errorf("uid longer than %d bytes", maxUIDLength)
	case strings.ContainsFunc(uid, func(r rune) bool { return r < 0x21 || r > 0x7e }):
		return fmt.Errorf("uid has non-printable characters")
	}
	return nil
}

// check validates every name and uid of the identity. The reason it
// returns is safe to put in an error.
func (id *identity) check() error {
	if err := validNamespace(id.namespace); err != nil {
		return err
	}
	if err := validObjectName(id.name); err != nil {
		return fmt.Errorf("service account %w", err)
	}
	if err := validUID(id.uid, false); err != nil {
		return fmt.Errorf("service account %w", err)
	}
	if id.podName != "" || id.podUID != "" {
		if err := validObjectName(id.podName); err != nil {
			return fmt.Errorf("pod %w", err)
		}
		if err := validUID(id.podUID, false); err != nil {
			return fmt.Errorf("pod %w", err)
		}
	}
	if id.nodeName != "" || id.nodeUID != "" {
		if err := validObjectName(id.nodeName); err != nil {
			return fmt.Errorf("node %w", err)
		}
		if err := validUID(id.nodeUID, true); err != nil {
			return fmt.Errorf("node %w", err)
		}
	}
	return nil
}

// identityFromClaims checks that sub and the kubernetes.io claim agree and
// are well formed. Errors wrap ErrInvalidToken.
func identityFromClaims(sub string, priv *privateClaims) (*identity, error) {
	k := priv.Kubernetes
	if k == nil {
		return nil, fmt.Errorf("%w: no kubernetes.io claim (legacy or non-projected token)", ErrInvalidToken)
	}
	if k.ServiceAccount == nil {
		return nil, fmt.Errorf("%w: kubernetes.io claim has no serviceaccount", ErrInvalidToken)
	}
	id := &identity{
		namespace: k.Namespace,
		name:      k.ServiceAccount.Name,
		uid:       k.ServiceAccount.UID,
	}
	if k.Pod != nil {
		id.podName, id.podUID = k.Pod.Name, k.Pod.UID
		if id.podName == "" {
			return nil, fmt.Errorf("%w: pod claim without name", ErrInvalidToken)
		}
	}
	if k.Node != nil {
		id.nodeName, id.nodeUID = k.Node.Name, k.Node.UID
		if id.nodeName == "" {
			return nil, fmt.Errorf("%w: node claim without name", ErrInvalidToken)
		}
	}
	if err := id.check(); err != nil {
		return nil, fmt.Errorf("%w: kubernetes.io claim: %w", ErrInvalidToken, err)
	}
	if sub != serviceAccountUsername(id.namespace, id.name) {
		return nil, fmt.Errorf("%w: sub does not match kubernetes.io claim", ErrInvalidToken)
	}
	return id, nil
}

// serviceAccount builds the result a verifier returns.
func (id *identity) serviceAccount(cluster, issuer string, aud []string, exp time.Time) *ServiceAccount {
	return &ServiceAccount{
		Cluster:   cluster,
		Issuer:    issuer,
		Namespace: id.namespace,
		Name:      id.name,
		UID:       id.uid,
		PodName:   id.podName,
		PodUID:    id.podUID,
		NodeName:  id.nodeName,
		NodeUID:   id.nodeUID,
		Audiences: aud,
		Expiry:    exp,
	}
}
