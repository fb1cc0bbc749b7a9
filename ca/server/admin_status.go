package server

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	adminv1 "github.com/lanyard-id/lanyard/proto/lanyard/admin/v1"
	"github.com/lanyard-id/lanyard/storage"
)

func (a *adminService) GetBundle(ctx context.Context, _ *adminv1.GetBundleRequest) (*adminv1.GetBundleResponse, error) {
	b := a.authority.Bundle()
	a.read(ctx, "admin.get-bundle", "")
	return &adminv1.GetBundleResponse{TrustDomain: b.TrustDomain.Name(), X509Authorities: rawCerts(b.Roots), Sequence: b.Sequence}, nil
}

// GetStatus describes the CA: this replica's roots and intermediates, and
// every replica's heartbeat and intermediate from the store (replicas not
// heard from for a day are left out).
func (a *adminService) GetStatus(ctx context.Context, _ *adminv1.GetStatusRequest) (*adminv1.GetStatusResponse, error) {
	b := a.authority.Bundle()
	resp := &adminv1.GetStatusResponse{
		TrustDomain: b.TrustDomain.Name(), BundleSequence: b.Sequence, StoreType: a.cfg.StoreType,
		ControlSequence: a.controls.Sequence(),
	}
	for _, r := range b.Roots {
		resp.Roots = append(resp.Roots, caCertProto(r, false))
	}
	if x, err := a.srv.cfg.Authority.Current(); err == nil {
		for i, c := range x.Chain {
			p := caCertProto(c, i == 0)
			if i == 0 {
				p.Replica = a.cfg.ReplicaName
			}
			resp.Intermediates = append(resp.Intermediates, p)
		}
	}
	replicas, err := a.store.ListReplicas(ctx)
	if err != nil {
		return nil, err
	}
	now := a.clock()
	for _, r := range replicas {
		if now.Sub(r.SeenAt) > 24*time.Hour {
			continue
		}
		health := r.Health
		if now.Sub(r.SeenAt) > 3*a.cfg.HeartbeatInterval {
			health = "stale"
		}
		resp.Replicas = append(resp.Replicas, &adminv1.Replica{Name: r.Name, Health: health, StartedAt: ts(r.StartedAt), LastSeen: ts(r.SeenAt)})
		if r.Name != a.cfg.ReplicaName && r.IntermediateKeyID != "" {
			resp.Intermediates = append(resp.Intermediates, &adminv1.CACertificate{
				SubjectKeyId: r.IntermediateKeyID, NotAfter: ts(r.IntermediateNotAfter), Active: true, Replica: r.Name,
			})
		}
	}
	if a.cfg.Verifiers != nil {
		for _, v := range a.cfg.Verifiers() {
			resp.TokenVerifiers = append(resp.TokenVerifiers, &adminv1.TokenVerifier{
				Cluster: v.Cluster, Method: v.Method, LastKeyFetch: ts(v.LastKeyFetch),
				Requests: v.Requests, CacheHits: v.CacheHits, Calls: v.Calls,
			})
		}
	}
	a.read(ctx, "admin.get-status", "")
	return resp, nil
}

func caCertProto(c *x509.Certificate, active bool) *adminv1.CACertificate {
	return &adminv1.CACertificate{
		Subject: c.Subject.String(), SubjectKeyId: hex.EncodeToString(c.SubjectKeyId),
		NotBefore: ts(c.NotBefore), NotAfter: ts(c.NotAfter), Active: active,
	}
}

func (a *adminService) ListAudit(ctx context.Context, req *adminv1.ListAuditRequest) (*adminv1.ListAuditResponse, error) {
	f := storage.AuditFilter{Actor: req.GetActor(), Action: req.GetAction(), PageSize: int(req.GetPageSize()), BeforeID: req.GetBeforeId()}
	if s := req.GetSince(); s != nil {
		f.Since = s.AsTime()
	}
	events, err := a.store.ListAudit(ctx, f)
	if err != nil {
		return nil, badInput(err)
	}
	resp := &adminv1.ListAuditResponse{}
	for _, e := range events {
		resp.Events = append(resp.Events, auditProto(e))
	}
	return resp, nil
}

// WatchAudit polls the store every AuditPoll for events after the last one
// sent. Reading the audit log is not itself audited (a follower would flood
// it).
func (a *adminService) WatchAudit(req *adminv1.WatchAuditRequest, stream adminv1.AdminService_WatchAuditServer) error {
	ctx := stream.Context()
	after := req.GetAfterId()
	if after == 0 {
		last, err := a.store.ListAudit(ctx, storage.AuditFilter{PageSize: 1})
		if err != nil {
			return err
		}
		if len(last) > 0 {
			after = last[0].ID
		}
	}
	t := time.NewTicker(a.cfg.AuditPoll)
	defer t.Stop()
	for {
		for {
			events, err := a.store.ListAudit(ctx, storage.AuditFilter{AfterID: after, PageSize: storage.MaxPageSize})
			if err != nil {
				return err
			}
			for _, e := range events {
				after = e.ID
				if (req.GetActor() != "" && e.Actor != req.GetActor()) || (req.GetAction() != "" && e.Action != req.GetAction()) {
					continue
				}
				if err := stream.Send(&adminv1.WatchAuditResponse{Event: auditProto(e)}); err != nil {
					return err
				}
			}
			if len(events) < storage.MaxPageSize {
				break
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-a.srv.stopping:
			return status.Error(codes.Unavailable, "CA is shutting down, reconnect")
		case <-t.C:
		}
	}
}

func auditProto(e storage.AuditEvent) *adminv1.AuditEvent {
	return &adminv1.AuditEvent{Id: e.ID, Time: ts(e.Time), Actor: e.Actor, Action: e.Action, Subject: e.Subject, Outcome: e.Outcome, Detail: e.Detail}
}
