package attest

import (
	"context"
	"errors"
	"fmt"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/lanyard-id/lanyard/agent"
)

// UnixAttestorName is the Attestor value of workloads the Unix attestor
// identified.
const UnixAttestorName = "unix"

// UnixRule maps callers by user and/or primary group to a service
// account. A nil UID or GID matches any; at least one must be set.
type UnixRule struct {
	UID            *uint32
	GID            *uint32
	Namespace      string
	ServiceAccount string
}

func (r UnixRule) matches(p Peer) bool {
	return (r.UID == nil || *r.UID == p.UID) && (r.GID == nil || *r.GID == p.GID)
}

// UnixConfig configures a Unix attestor.
type UnixConfig struct {
	// Rules are tried in order; the first that matches the peer wins.
	Rules []UnixRule
}

// Unix identifies a socket peer by its uid and gid (SO_PEERCRED) from a
// static mapping, for development and hosts without Kubernetes. The gid is
// the peer's effective primary group at connect time; supplementary groups
// are not considered.
type Unix struct {
	rules []UnixRule
}

// NewUnix validates the rules: each must name a uid or a gid, and a valid
// namespace (DNS-1123 label) and service account (DNS-1123 subdomain).
func NewUnix(cfg UnixConfig) (*Unix, error) {
	for i, r := range cfg.Rules {
		if r.UID == nil && r.GID == nil {
			return nil, fmt.Errorf("unix attestor: rule %d: a uid or a gid is required", i)
		}
		if err := validateServiceAccount(r.Namespace, r.ServiceAccount); err != nil {
			return nil, fmt.Errorf("unix attestor: rule %d: %w", i, err)
		}
	}
	return &Unix{rules: append([]UnixRule(nil), cfg.Rules...)}, nil
}

// Attest returns the service account of the first rule that matches p,
// or nil when none does.
func (u *Unix) Attest(_ context.Context, p Peer) (*agent.Attested, error) {
	for _, r := range u.rules {
		if r.matches(p) {
			return &agent.Attested{
				Attestor:       UnixAttestorName,
				Namespace:      r.Namespace,
				ServiceAccount: r.ServiceAccount,
			}, nil
		}
	}
	return nil, nil
}

// validateServiceAccount applies the Kubernetes naming rules that
// ca.WorkloadID applies, so that bad config fails at start.
func validateServiceAccount(namespace, serviceAccount string) error {
	if namespace == "" || serviceAccount == "" {
		return errors.New("namespace and service account are required")
	}
	if errs := validation.IsDNS1123Label(namespace); len(errs) > 0 {
		return fmt.Errorf("namespace %q is not a valid Kubernetes namespace", namespace)
	}
	if errs := validation.IsDNS1123Subdomain(serviceAccount); len(errs) > 0 {
		return fmt.Errorf("service account %q is not a valid Kubernetes name", serviceAccount)
	}
	return nil
}
