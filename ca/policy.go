package ca

import (
	"fmt"
	"net"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Policy decides which SPIFFE IDs and extra SANs a caller may get and for
// how long. The zero Policy grants every service account its own ID and
// nothing else.
type Policy struct {
	// Rules grant extra DNS/IP SANs and TTL caps to service accounts. The
	// first rule that matches wins.
	Rules []Rule `yaml:"rules"`
	// DenyIdentities are SPIFFE IDs never issued.
	DenyIdentities []spiffeid.ID `yaml:"denyIdentities"`
	// DenyAgents are agent SPIFFE IDs whose requests are refused.
	DenyAgents []spiffeid.ID `yaml:"denyAgents"`
}

// Rule matches a service account; "*" matches any namespace or name.
type Rule struct {
	Namespace      string        `yaml:"namespace"`
	ServiceAccount string        `yaml:"serviceAccount"`
	DNSNames       []string      `yaml:"dnsNames"`
	IPAddresses    []string      `yaml:"ipAddresses"`
	MaxTTL         time.Duration `yaml:"maxTTL"`
}

// Grant is what a service account may have beyond its SPIFFE ID.
type Grant struct {
	DNSNames []string
	IPs      []net.IP
	// MaxTTL, when non-zero, caps the TTL below the CA-wide maximum.
	MaxTTL time.Duration
}

// Validate checks the rules are well formed.
func (p *Policy) Validate() error {
	for i, r := range p.Rules {
		if r.Namespace == "" || r.ServiceAccount == "" {
			return fmt.Errorf("policy rule %d: namespace and serviceAccount are required (use \"*\" for any)", i)
		}
		for _, ip := range r.IPAddresses {
			if net.ParseIP(ip) == nil {
				return fmt.Errorf("policy rule %d: %q is not an IP address", i, ip)
			}
		}
		if r.MaxTTL < 0 {
			return fmt.Errorf("policy rule %d: negative maxTTL", i)
		}
	}
	return nil
}

// Authorize returns the grant for id (the service account ns/sa), or
// ErrPermissionDenied when id is denied.
func (p *Policy) Authorize(id spiffeid.ID, namespace, serviceAccount string) (Grant, error) {
	if slices.Contains(p.DenyIdentities, id) {
		return Grant{}, fmt.Errorf("%w: identity %s is on the deny list", ErrPermissionDenied, id)
	}
	for _, r := range p.Rules {
		if match(r.Namespace, namespace) && match(r.ServiceAccount, serviceAccount) {
			g := Grant{DNSNames: r.DNSNames, MaxTTL: r.MaxTTL}
			for _, s := range r.IPAddresses {
				g.IPs = append(g.IPs, net.ParseIP(s))
			}
			return g, nil
		}
	}
	return Grant{}, nil
}

// AgentAllowed reports ErrPermissionDenied for a denied agent.
func (p *Policy) AgentAllowed(agent spiffeid.ID) error {
	if slices.Contains(p.DenyAgents, agent) {
		return fmt.Errorf("%w: agent %s is on the deny list", ErrPermissionDenied, agent)
	}
	return nil
}

func match(pattern, s string) bool { return pattern == "*" || pattern == s }
