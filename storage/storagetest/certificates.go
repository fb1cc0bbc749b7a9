package storagetest

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lanyard-id/lanyard/storage"
)

func testRoundTrip(t *testing.T, s storage.Store) {
	ctx := t.Context()
	revoked := cert(2)
	revoked.RevokedAt = base.Add(30 * time.Minute)
	sparse := storage.CertificateRecord{ // only the required fields
		Serial: "1", SPIFFEID: "spiffe://cluster.local/x",
		NotBefore: base, NotAfter: base, IssuedAt: base,
	}
	for _, tt := range []struct {
		name string
		rec  storage.CertificateRecord
	}{
		{"full", cert(1)},
		{"revoked", revoked},
		{"required fields only", sparse},
	} {
		t.Run(tt.name, func(t *testing.T) {
			require.NoError(t, s.RecordCertificates(ctx, []storage.CertificateRecord{tt.rec}))
			got, err := s.GetCertificate(ctx, tt.rec.Serial)
			require.NoError(t, err)
			if len(tt.rec.SHA256) == 0 {
				require.Empty(t, got.SHA256)
				got.SHA256 = tt.rec.SHA256
			}
			require.Equal(t, tt.rec, got)
		})
	}

	t.Run("non-UTC times come back UTC", func(t *testing.T) {
		zone := time.FixedZone("UTC+5:30", 5*3600+1800)
		rec := cert(3)
		rec.NotBefore, rec.NotAfter, rec.IssuedAt = rec.NotBefore.In(zone), rec.NotAfter.In(zone), rec.IssuedAt.In(zone)
		require.NoError(t, s.RecordCertificates(ctx, []storage.CertificateRecord{rec}))
		got, err := s.GetCertificate(ctx, rec.Serial)
		require.NoError(t, err)
		require.Equal(t, cert(3), got)
		require.Equal(t, time.UTC, got.IssuedAt.Location())
	})
}

func testBatchAtomic(t *testing.T, s storage.Store) {
	ctx := t.Context()
	require.NoError(t, s.RecordCertificates(ctx, certs(0, 1)))
	for _, tt := range []struct {
		name  string
		batch []storage.CertificateRecord
	}{
		{"duplicate of a stored serial", append(certs(1, 4), cert(0))},
		{"duplicate within the batch", append(certs(4, 6), cert(4))},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := s.RecordCertificates(ctx, tt.batch)
			require.ErrorIs(t, err, storage.ErrConflict)
			require.NotErrorIs(t, err, storage.ErrUnavailable)
		})
	}
	for _, r := range certs(1, 6) {
		_, err := s.GetCertificate(ctx, r.Serial)
		require.ErrorIs(t, err, storage.ErrNotFound, "serial %s of a failed batch was written", r.Serial)
	}
	n, err := s.CountCertificates(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 1, n)
	require.NoError(t, s.RecordCertificates(ctx, nil), "empty batch")
}

func testRecordInvalid(t *testing.T, s storage.Store) {
	ctx := t.Context()
	for _, tt := range []struct {
		name   string
		mutate func(*storage.CertificateRecord)
	}{
		{"empty serial", func(r *storage.CertificateRecord) { r.Serial = "" }},
		{"empty SPIFFE ID", func(r *storage.CertificateRecord) { r.SPIFFEID = "" }},
		{"zero IssuedAt", func(r *storage.CertificateRecord) { r.IssuedAt = time.Time{} }},
		{"NotAfter before NotBefore", func(r *storage.CertificateRecord) { r.NotAfter = r.NotBefore.Add(-1) }},
		{"NotAfter past 2262", func(r *storage.CertificateRecord) {
			r.NotAfter = time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			bad := cert(9)
			tt.mutate(&bad)
			err := s.RecordCertificates(ctx, []storage.CertificateRecord{cert(8), bad})
			require.ErrorIs(t, err, storage.ErrInvalidArgument)
			_, err = s.GetCertificate(ctx, cert(8).Serial)
			require.ErrorIs(t, err, storage.ErrNotFound)
		})
	}
}

func testGetNotFound(t *testing.T, s storage.Store) {
	require.NoError(t, s.RecordCertificates(t.Context(), certs(0, 2)))
	_, err := s.GetCertificate(t.Context(), "deadbeef")
	require.ErrorIs(t, err, storage.ErrNotFound)
	require.NotErrorIs(t, err, storage.ErrUnavailable)
}

func testListFilters(t *testing.T, s storage.Store) {
	ctx := t.Context()
	mk := func(serial, ns, node, kind string, issued, nb, na time.Duration) storage.CertificateRecord {
		return storage.CertificateRecord{
			Serial: serial, SPIFFEID: "spiffe://cluster.local/ns/" + ns + "/sa/" + serial,
			Namespace: ns, NodeName: node, Kind: kind,
			IssuedAt: base.Add(issued), NotBefore: base.Add(nb), NotAfter: base.Add(na),
		}
	}
	h := time.Hour
	recs := []storage.CertificateRecord{
		mk("c1", "a", "n1", "workload", 0, 0, h),
		mk("c2", "a", "n2", "workload", h, h, 2*h),
		mk("c3", "b", "n1", "workload", time.Minute, 0, h),
		mk("c4", "", "n1", "agent", 2*time.Minute, 0, 24*h),
		mk("c5", "b", "n2", "istio", -2*h, -2*h, -h),
	}
	recs[3].SPIFFEID = "spiffe://cluster.local/lanyard/agent/kind/n1"
	require.NoError(t, s.RecordCertificates(ctx, recs))

	for _, tt := range []struct {
		name   string
		filter storage.CertificateFilter
		want   []string
	}{
		{"all newest first", storage.CertificateFilter{}, []string{"c2", "c4", "c3", "c1", "c5"}},
		{"SPIFFE ID", storage.CertificateFilter{SPIFFEID: recs[2].SPIFFEID}, []string{"c3"}},
		{"namespace", storage.CertificateFilter{Namespace: "a"}, []string{"c2", "c1"}},
		{"node", storage.CertificateFilter{NodeName: "n1"}, []string{"c4", "c3", "c1"}},
		{"kind", storage.CertificateFilter{Kind: "agent"}, []string{"c4"}},
		{"valid at", storage.CertificateFilter{ValidAt: base.Add(30 * time.Minute)}, []string{"c4", "c3", "c1"}},
		{"valid at both bounds inclusive", storage.CertificateFilter{ValidAt: base.Add(h)}, []string{"c2", "c4", "c3", "c1"}},
		{"valid at before all", storage.CertificateFilter{ValidAt: base.Add(-3 * h)}, nil},
		{"namespace and node", storage.CertificateFilter{Namespace: "b", NodeName: "n2"}, []string{"c5"}},
		{"node and valid at", storage.CertificateFilter{NodeName: "n2", ValidAt: base.Add(90 * time.Minute)}, []string{"c2"}},
		{"no match", storage.CertificateFilter{Namespace: "nope"}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			page, err := s.ListCertificates(ctx, tt.filter)
			require.NoError(t, err)
			require.Equal(t, tt.want, nilIfEmpty(serials(page.Certificates)))
			require.Empty(t, page.NextPageToken)
		})
	}
}

func nilIfEmpty(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	return s
}

func testListPaging(t *testing.T, s storage.Store) {
	ctx := t.Context()
	// 250 records, three per issued_at second, so paging must break ties
	// on the serial; every other one in namespace "odd".
	var all []storage.CertificateRecord
	for i := range 250 {
		r := cert(i)
		r.IssuedAt = base.Add(time.Duration(i/3) * time.Second)
		if i%2 == 1 {
			r.Namespace = "odd"
		}
		all = append(all, r)
	}
	require.NoError(t, s.RecordCertificates(ctx, all[:125]))
	require.NoError(t, s.RecordCertificates(ctx, all[125:]))

	for _, tt := range []struct {
		name      string
		filter    storage.CertificateFilter
		wantTotal int
		wantPages int
	}{
		{"default page size", storage.CertificateFilter{}, 250, 3},
		{"page size 7", storage.CertificateFilter{PageSize: 7}, 250, 36},
		{"page size 125 exact", storage.CertificateFilter{PageSize: 125}, 250, 2},
		{"filtered", storage.CertificateFilter{Namespace: "odd", PageSize: 50}, 125, 3},
	} {
		t.Run(tt.name, func(t *testing.T) {
			seen := map[string]bool{}
			var prev *storage.CertificateRecord
			f, pages := tt.filter, 0
			for {
				page, err := s.ListCertificates(ctx, f)
				require.NoError(t, err)
				pages++
				require.LessOrEqual(t, pages, tt.wantPages, "too many pages")
				for i := range page.Certificates {
					r := page.Certificates[i]
					require.False(t, seen[r.Serial], "serial %s listed twice", r.Serial)
					seen[r.Serial] = true
					if prev != nil {
						require.True(t, r.IssuedAt.Before(prev.IssuedAt) ||
							(r.IssuedAt.Equal(prev.IssuedAt) && r.Serial < prev.Serial),
							"%s listed after %s", r.Serial, prev.Serial)
					}
					prev = &r
				}
				if page.NextPageToken == "" {
					break
				}
				f.PageToken = page.NextPageToken
			}
			require.Len(t, seen, tt.wantTotal)
			require.Equal(t, tt.wantPages, pages)
		})
	}
}

func testListPageSize(t *testing.T, s storage.Store) {
	ctx := t.Context()
	require.NoError(t, s.RecordCertificates(ctx, certs(0, 150)))
	for _, tt := range []struct {
		size, want int
		more       bool
	}{
		{0, storage.DefaultPageSize, true},
		{-1, storage.DefaultPageSize, true},
		{149, 149, true},
		{150, 150, false},
		{storage.MaxPageSize * 5, 150, false},
	} {
		page, err := s.ListCertificates(ctx, storage.CertificateFilter{PageSize: tt.size})
		require.NoError(t, err)
		require.Len(t, page.Certificates, tt.want, "page size %d", tt.size)
		require.Equal(t, tt.more, page.NextPageToken != "", "page size %d", tt.size)
	}
}

func testListBadPageToken(t *testing.T, s storage.Store) {
	for _, tok := range []string{"not a token!", "AAAA", "eyJmb28iOiJiYXIifQ"} {
		_, err := s.ListCertificates(t.Context(), storage.CertificateFilter{PageToken: tok})
		require.ErrorIs(t, err, storage.ErrInvalidArgument, "token %q", tok)
	}
}

func testRevoke(t *testing.T, s storage.Store) {
	ctx := t.Context()
	require.NoError(t, s.RecordCertificates(ctx, certs(0, 2)))
	first, second := base.Add(10*time.Minute), base.Add(20*time.Minute)

	require.NoError(t, s.RevokeCertificate(ctx, cert(0).Serial, first))
	got, err := s.GetCertificate(ctx, cert(0).Serial)
	require.NoError(t, err)
	require.Equal(t, first, got.RevokedAt)

	require.NoError(t, s.RevokeCertificate(ctx, cert(0).Serial, second), "revoke again")
	got, err = s.GetCertificate(ctx, cert(0).Serial)
	require.NoError(t, err)
	require.Equal(t, first, got.RevokedAt, "second revocation must keep the first time")

	other, err := s.GetCertificate(ctx, cert(1).Serial)
	require.NoError(t, err)
	require.True(t, other.RevokedAt.IsZero())

	require.ErrorIs(t, s.RevokeCertificate(ctx, "deadbeef", first), storage.ErrNotFound)
	require.ErrorIs(t, s.RevokeCertificate(ctx, cert(1).Serial, time.Time{}), storage.ErrInvalidArgument)
}

func testCount(t *testing.T, s storage.Store) {
	ctx := t.Context()
	for _, tt := range []struct {
		add  []storage.CertificateRecord
		want int64
	}{
		{nil, 0},
		{certs(0, 1), 1},
		{certs(1, 40), 40},
		{certs(39, 41), 40}, // conflict: nothing added
	} {
		_ = s.RecordCertificates(ctx, tt.add)
		n, err := s.CountCertificates(ctx)
		require.NoError(t, err)
		require.Equal(t, tt.want, n)
	}
}
