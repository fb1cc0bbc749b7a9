package attest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/lanyard-id/lanyard/agent"
	"github.com/lanyard-id/lanyard/ca"
)

// Attestor identifies a socket peer. It returns (nil, nil) when the peer
// is not one it knows, so that the next attestor may try; an error stops
// attestation (wrap agent.ErrNotIdentified when the answer is a definite
// no, leave it unwrapped when the attestor cannot answer now).
type Attestor interface {
	Attest(ctx context.Context, p Peer) (*agent.Attested, error)
}

// IdentifierConfig configures an Identifier.
type IdentifierConfig struct {
	// TrustDomain of the SPIFFE IDs derived. Required.
	TrustDomain spiffeid.TrustDomain
	// Attestors are tried in order for callers that present no token.
	Attestors []Attestor
	// TokenFile turns on sidecar mode: every caller is the pod whose
	// projected token (audience "lanyard") is at this path. See the
	// package documentation.
	TokenFile string
	// Logger receives identification details (never tokens). Default:
	// discard.
	Logger *slog.Logger
}

// Identifier tells the agent's servers which workload is calling. Both
// the SDS and the Workload API server use it.
type Identifier struct {
	td        spiffeid.TrustDomain
	attestors []Attestor
	tokenFile *tokenFile
	log       *slog.Logger
}

// NewIdentifier validates cfg. Without a token file and without attestors
// only callers that present a token can be identified.
func NewIdentifier(cfg IdentifierConfig) (*Identifier, error) {
	if cfg.TrustDomain.IsZero() {
		return nil, errors.New("identifier: trust domain is required")
	}
	for i, a := range cfg.Attestors {
		if a == nil {
			return nil, fmt.Errorf("identifier: attestor %d is nil", i)
		}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	id := &Identifier{td: cfg.TrustDomain, attestors: append([]Attestor(nil), cfg.Attestors...), log: cfg.Logger}
	if cfg.TokenFile != "" {
		id.tokenFile = &tokenFile{path: cfg.TokenFile}
	}
	return id, nil
}

// Identify identifies the caller of a gRPC call:
//
//  1. sidecar mode (TokenFile set): the token in the file, whatever the
//     caller sent;
//  2. a call with "authorization: Bearer <token>" metadata: that token;
//  3. otherwise the connection's peer (Credentials), through the
//     attestors in order.
//
// A caller that cannot be identified gets an error wrapping
// agent.ErrNotIdentified. Any other error means identification could not
// be done now (for instance the Kubernetes API is not synced).
func (i *Identifier) Identify(ctx context.Context) (agent.Workload, error) {
	if i.tokenFile != nil {
		tok, err := i.tokenFile.Token()
		if err != nil {
			i.log.Error("sidecar token unreadable", "path", i.tokenFile.path, "error", err)
			return agent.Workload{}, fmt.Errorf("%w: %w", agent.ErrNotIdentified, err)
		}
		w, err := i.tokenWorkload(tok, "sidecar")
		if err == nil {
			w.TokenSource = i.tokenFile.Token // renewals read the rotated file
		}
		return w, err
	}
	tok, ok, err := bearerToken(ctx)
	if err != nil {
		return agent.Workload{}, fmt.Errorf("%w: %w", agent.ErrNotIdentified, err)
	}
	if ok {
		return i.tokenWorkload(tok, "bearer")
	}
	return i.attest(ctx)
}

func (i *Identifier) tokenWorkload(tok, source string) (agent.Workload, error) {
	ns, sa, err := tokenServiceAccount(tok)
	if err != nil {
		return agent.Workload{}, fmt.Errorf("%w: %w", agent.ErrNotIdentified, err)
	}
	id, err := ca.WorkloadID(i.td, ns, sa)
	if err != nil {
		return agent.Workload{}, fmt.Errorf("%w: %w: %v", agent.ErrNotIdentified, ErrInvalidToken, err)
	}
	i.log.Debug("workload identified", "by", source, "spiffe_id", id.String())
	return agent.Workload{ID: id, Token: tok}, nil
}

func (i *Identifier) attest(ctx context.Context) (agent.Workload, error) {
	p, ok := PeerFromContext(ctx)
	if !ok {
		return agent.Workload{}, fmt.Errorf("%w: no token and no peer credentials", agent.ErrNotIdentified)
	}
	for _, a := range i.attestors {
		att, err := a.Attest(ctx, p)
		if err != nil {
			return agent.Workload{}, fmt.Errorf("attest pid %d uid %d: %w", p.PID, p.UID, err)
		}
		if att == nil {
			continue
		}
		id, err := ca.WorkloadID(i.td, att.Namespace, att.ServiceAccount)
		if err != nil {
			return agent.Workload{}, fmt.Errorf("%w: attested as %s/%s: %v", agent.ErrNotIdentified, att.Namespace, att.ServiceAccount, err)
		}
		i.log.Debug("workload identified", "by", att.Attestor, "spiffe_id", id.String(),
			"pid", p.PID, "uid", p.UID, "gid", p.GID, "pod", att.PodName, "pod_uid", att.PodUID)
		return agent.Workload{ID: id, Attested: att}, nil
	}
	return agent.Workload{}, fmt.Errorf("%w: no attestor knows pid %d uid %d gid %d", agent.ErrNotIdentified, p.PID, p.UID, p.GID)
}
