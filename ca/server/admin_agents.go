package server

import (
	"context"
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/lanyard-id/lanyard/ca"
	adminv1 "github.com/lanyard-id/lanyard/proto/lanyard/admin/v1"
	"github.com/lanyard-id/lanyard/storage"
)

// resolveAgent finds an agent by SPIFFE ID, or by node name when exactly
// one agent runs on a node of that name.
func (a *adminService) resolveAgent(ctx context.Context, ref string) (storage.AgentRecord, error) {
	if ref == "" {
		return storage.AgentRecord{}, fmt.Errorf("%w: agent SPIFFE ID or node name is required", ca.ErrInvalidRequest)
	}
	if strings.HasPrefix(ref, "spiffe://") {
		id, err := spiffeid.FromString(ref)
		if err != nil {
			return storage.AgentRecord{}, fmt.Errorf("%w: %v", ca.ErrInvalidRequest, err)
		}
		return a.store.GetAgent(ctx, id.String())
	}
	agents, err := a.store.ListAgents(ctx)
	if err != nil {
		return storage.AgentRecord{}, err
	}
	var found []storage.AgentRecord
	for _, ag := range agents {
		if ag.NodeName == ref {
			found = append(found, ag)
		}
	}
	switch len(found) {
	case 0:
		return storage.AgentRecord{}, fmt.Errorf("agent on node %q: %w", ref, storage.ErrNotFound)
	case 1:
		return found[0], nil
	default:
		return storage.AgentRecord{}, fmt.Errorf("%w: %d agents run on a node named %q (one per cluster): name one by SPIFFE ID",
			ca.ErrInvalidRequest, len(found), ref)
	}
}

func (a *adminService) ListAgents(ctx context.Context, _ *adminv1.ListAgentsRequest) (*adminv1.ListAgentsResponse, error) {
	agents, err := a.store.ListAgents(ctx)
	if err != nil {
		return nil, err
	}
	a.read(ctx, "admin.list-agents", "")
	resp := &adminv1.ListAgentsResponse{}
	for _, ag := range agents {
		resp.Agents = append(resp.Agents, agentProto(ag))
	}
	return resp, nil
}

func (a *adminService) GetAgent(ctx context.Context, req *adminv1.GetAgentRequest) (*adminv1.GetAgentResponse, error) {
	ag, err := a.resolveAgent(ctx, req.GetAgent())
	if err != nil {
		return nil, err
	}
	a.read(ctx, "admin.get-agent", ag.SPIFFEID)
	return &adminv1.GetAgentResponse{Agent: agentProto(ag)}, nil
}

func (a *adminService) EvictAgent(ctx context.Context, req *adminv1.EvictAgentRequest) (*adminv1.EvictAgentResponse, error) {
	ag, err := a.resolveAgent(ctx, req.GetAgent())
	if err != nil {
		return nil, err
	}
	var revoked []string
	err = a.change(ctx, "admin.evict-agent", ag.SPIFFEID, "", func() error {
		revoked, err = a.store.EvictAgent(ctx, ag.SPIFFEID, a.clock())
		return err
	})
	if err != nil {
		return nil, err
	}
	if ag, err = a.store.GetAgent(ctx, ag.SPIFFEID); err != nil {
		return nil, err
	}
	return &adminv1.EvictAgentResponse{Agent: agentProto(ag), RevokedSerials: revoked}, nil
}

func (a *adminService) BanAgent(ctx context.Context, req *adminv1.BanAgentRequest) (*adminv1.BanAgentResponse, error) {
	ag, err := a.setBanned(ctx, req.GetAgent(), true)
	if err != nil {
		return nil, err
	}
	return &adminv1.BanAgentResponse{Agent: agentProto(ag)}, nil
}

func (a *adminService) UnbanAgent(ctx context.Context, req *adminv1.UnbanAgentRequest) (*adminv1.UnbanAgentResponse, error) {
	ag, err := a.setBanned(ctx, req.GetAgent(), false)
	if err != nil {
		return nil, err
	}
	return &adminv1.UnbanAgentResponse{Agent: agentProto(ag)}, nil
}

func (a *adminService) setBanned(ctx context.Context, ref string, banned bool) (storage.AgentRecord, error) {
	ag, err := a.resolveAgent(ctx, ref)
	if err != nil {
		return storage.AgentRecord{}, err
	}
	action := "admin.ban-agent"
	if !banned {
		action = "admin.unban-agent"
	}
	if err := a.change(ctx, action, ag.SPIFFEID, "", func() error {
		return a.store.SetAgentBanned(ctx, ag.SPIFFEID, banned)
	}); err != nil {
		return storage.AgentRecord{}, err
	}
	if id, err := spiffeid.FromString(ag.SPIFFEID); err == nil {
		a.banned.forget(id)
	}
	return a.store.GetAgent(ctx, ag.SPIFFEID)
}

func (a *adminService) DenyIdentity(ctx context.Context, req *adminv1.DenyIdentityRequest) (*adminv1.DenyIdentityResponse, error) {
	id, err := a.identity(req.GetSpiffeId())
	if err != nil {
		return nil, err
	}
	if len(req.GetReason()) > 256 {
		return nil, fmt.Errorf("%w: reason over 256 bytes", ca.ErrInvalidRequest)
	}
	d := storage.DeniedIdentity{SPIFFEID: id.String(), CreatedAt: a.clock(), Actor: actorFrom(ctx), Reason: req.GetReason()}
	if err := a.change(ctx, "admin.deny-identity", d.SPIFFEID, req.GetReason(), func() error {
		return a.store.DenyIdentity(ctx, d)
	}); err != nil {
		return nil, err
	}
	return &adminv1.DenyIdentityResponse{Identity: deniedProto(d)}, nil
}

func (a *adminService) AllowIdentity(ctx context.Context, req *adminv1.AllowIdentityRequest) (*adminv1.AllowIdentityResponse, error) {
	id, err := a.identity(req.GetSpiffeId())
	if err != nil {
		return nil, err
	}
	if err := a.change(ctx, "admin.allow-identity", id.String(), "", func() error {
		return a.store.AllowIdentity(ctx, id.String())
	}); err != nil {
		return nil, err
	}
	return &adminv1.AllowIdentityResponse{}, nil
}

func (a *adminService) ListDeniedIdentities(ctx context.Context, _ *adminv1.ListDeniedIdentitiesRequest) (*adminv1.ListDeniedIdentitiesResponse, error) {
	list, err := a.store.ListDeniedIdentities(ctx)
	if err != nil {
		return nil, err
	}
	a.read(ctx, "admin.list-denied-identities", "")
	resp := &adminv1.ListDeniedIdentitiesResponse{}
	for _, d := range list {
		resp.Identities = append(resp.Identities, deniedProto(d))
	}
	return resp, nil
}

// identity parses a SPIFFE ID of the CA's trust domain.
func (a *adminService) identity(s string) (spiffeid.ID, error) {
	id, err := spiffeid.FromString(s)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("%w: SPIFFE ID %.256q: %v", ca.ErrInvalidRequest, s, err)
	}
	if td := a.srv.cfg.CA.TrustDomain(); id.TrustDomain() != td {
		return spiffeid.ID{}, fmt.Errorf("%w: %s is not in trust domain %s", ca.ErrInvalidRequest, id, td)
	}
	return id, nil
}

func agentProto(a storage.AgentRecord) *adminv1.Agent {
	return &adminv1.Agent{
		SpiffeId: a.SPIFFEID, Cluster: a.Cluster, NodeName: a.NodeName, Serial: a.Serial,
		FirstSeen: ts(a.FirstSeen), LastSeen: ts(a.LastSeen), SvidExpiresAt: ts(a.NotAfter), Banned: a.Banned,
		BundleSequence: a.BundleSeqAck, Workloads: a.Workloads, EvictedAt: ts(a.EvictedAt),
	}
}

func deniedProto(d storage.DeniedIdentity) *adminv1.DeniedIdentity {
	return &adminv1.DeniedIdentity{SpiffeId: d.SPIFFEID, CreatedAt: ts(d.CreatedAt), Actor: d.Actor, Reason: d.Reason}
}
