package server

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/lanyard-id/lanyard/ca"
	adminv1 "github.com/lanyard-id/lanyard/proto/lanyard/admin/v1"
	"github.com/lanyard-id/lanyard/storage"
)

func (a *adminService) ListCertificates(ctx context.Context, req *adminv1.ListCertificatesRequest) (*adminv1.ListCertificatesResponse, error) {
	f := storage.CertificateFilter{
		SPIFFEID: req.GetSpiffeId(), Namespace: req.GetNamespace(), ServiceAccount: req.GetServiceAccount(),
		NodeName: req.GetNodeName(), Kind: req.GetKind(), Revoked: req.GetRevoked(),
		PageSize: int(req.GetPageSize()), PageToken: req.GetPageToken(),
	}
	if req.GetAgent() != "" {
		ag, err := a.resolveAgent(ctx, req.GetAgent())
		if err != nil {
			return nil, err
		}
		f.Caller = ag.SPIFFEID
	}
	if d := req.GetExpiringWithin(); d != nil {
		if err := d.CheckValid(); err != nil || d.AsDuration() <= 0 {
			return nil, fmt.Errorf("%w: expiring_within must be a positive duration", ca.ErrInvalidRequest)
		}
		now := a.clock()
		f.ValidAt, f.ExpiresBefore = now, now.Add(d.AsDuration())
	}
	if ts := req.GetIssuedSince(); ts != nil {
		if err := ts.CheckValid(); err != nil {
			return nil, fmt.Errorf("%w: issued_since: %v", ca.ErrInvalidRequest, err)
		}
		f.IssuedSince = ts.AsTime()
	}
	page, err := a.store.ListCertificates(ctx, f)
	if err != nil {
		return nil, badInput(err)
	}
	a.read(ctx, "admin.list-certificates", "")
	resp := &adminv1.ListCertificatesResponse{NextPageToken: page.NextPageToken}
	for _, r := range page.Certificates {
		resp.Certificates = append(resp.Certificates, certProto(r))
	}
	return resp, nil
}

func (a *adminService) GetCertificate(ctx context.Context, req *adminv1.GetCertificateRequest) (*adminv1.GetCertificateResponse, error) {
	if req.GetSerial() == "" {
		return nil, fmt.Errorf("%w: serial is required", ca.ErrInvalidRequest)
	}
	r, err := a.store.GetCertificate(ctx, req.GetSerial())
	if err != nil {
		return nil, err
	}
	a.read(ctx, "admin.get-certificate", r.Serial)
	return &adminv1.GetCertificateResponse{Certificate: certProto(r)}, nil
}

func (a *adminService) CountCertificates(ctx context.Context, req *adminv1.CountCertificatesRequest) (*adminv1.CountCertificatesResponse, error) {
	by := storage.GroupBySPIFFEID
	switch req.GetGroup() {
	case adminv1.CountGroup_COUNT_GROUP_UNSPECIFIED, adminv1.CountGroup_COUNT_GROUP_IDENTITY:
	case adminv1.CountGroup_COUNT_GROUP_NODE:
		by = storage.GroupByNode
	default:
		return nil, fmt.Errorf("%w: unknown group %d", ca.ErrInvalidRequest, req.GetGroup())
	}
	f := storage.CertificateFilter{Namespace: req.GetNamespace()}
	if req.GetValidOnly() {
		f.ValidAt = a.clock()
	}
	groups, err := a.store.CountCertificatesBy(ctx, by, f)
	if err != nil {
		return nil, badInput(err)
	}
	a.read(ctx, "admin.count-certificates", "")
	resp := &adminv1.CountCertificatesResponse{}
	for _, g := range groups {
		resp.Groups = append(resp.Groups, &adminv1.CountCertificatesResponse_Group{Key: g.Key, Count: g.Count})
		resp.Total += g.Count
	}
	return resp, nil
}

// badInput turns a store's refusal of a request (a page token it did not
// issue, a time it cannot hold) into a bad request.
func badInput(err error) error {
	if errors.Is(err, storage.ErrInvalidArgument) {
		return fmt.Errorf("%w: %v", ca.ErrInvalidRequest, err)
	}
	return err
}

func certProto(r storage.CertificateRecord) *adminv1.Certificate {
	return &adminv1.Certificate{
		Serial: r.Serial, SpiffeId: r.SPIFFEID, Kind: r.Kind, Cluster: r.Cluster, Namespace: r.Namespace,
		ServiceAccount: r.ServiceAccount, PodName: r.PodName, PodUid: r.PodUID, NodeName: r.NodeName,
		Caller: r.Caller, NotBefore: ts(r.NotBefore), NotAfter: ts(r.NotAfter), IssuedAt: ts(r.IssuedAt),
		RevokedAt: ts(r.RevokedAt), Sha256: hex.EncodeToString(r.SHA256), IssuerKeyId: r.IssuerKeyID,
	}
}

// ts is t as a Timestamp, nil for the zero time.
func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}
