package integration

import (
	"fmt"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"

	"github.com/lanyard-id/lanyard/integration/harness"
	cav1 "github.com/lanyard-id/lanyard/proto/lanyard/ca/v1"
)

// TestBatch: one batch mixing good and bad entries gets one result per
// entry, in order, ids echoed; the good ones are signed and recorded, the
// bad ones refused with their own code, and nothing else is recorded.
func TestBatch(t *testing.T) {
	t.Parallel()
	d, a := startDev(t)
	type want struct {
		id   string
		code codes.Code
	}
	type built struct {
		entries []*cav1.SVIDRequest
		csrs    []*harness.CSR // nil for the bad entries
		ids     []spiffeid.ID  // SPIFFE ID of the good entries, zero for bad
		want    []want
	}
	tokens := map[string]string{} // ns/sa → token; a pod reuses its token
	good := func(t *testing.T, b *built, ns, sa string) {
		csr := harness.NewCSR(t, harness.CSROptions{})
		id := fmt.Sprint(len(b.entries))
		tok, ok := tokens[ns+"/"+sa]
		if !ok {
			tok = workloadToken(t, d, a, ns, sa)
			tokens[ns+"/"+sa] = tok
		}
		b.entries = append(b.entries, entry(id, tok, csr.DER, 0))
		b.csrs, b.ids = append(b.csrs, csr), append(b.ids, d.WorkloadID(ns, sa))
		b.want = append(b.want, want{id, codes.OK})
	}
	bad := func(b *built, e *cav1.SVIDRequest, code codes.Code) {
		e.Id = fmt.Sprint(len(b.entries))
		b.entries = append(b.entries, e)
		b.csrs, b.ids = append(b.csrs, nil), append(b.ids, spiffeid.ID{})
		b.want = append(b.want, want{e.Id, code})
	}

	for _, tt := range []struct {
		name  string
		build func(t *testing.T) *built
	}{
		{name: "good, bad, good", build: func(t *testing.T) *built {
			b := &built{}
			good(t, b, "default", "default")
			bad(b, entry("", "garbage", harness.NewCSR(t, harness.CSROptions{}).DER, 0), codes.Unauthenticated)
			good(t, b, "shop", "cart")
			return b
		}},
		{name: "bad, good, bad, good, bad", build: func(t *testing.T) *built {
			b := &built{}
			tok := workloadToken(t, d, a, "default", "default")
			bad(b, entry("", tok, harness.NewCSR(t, harness.CSROptions{URIs: []string{"spiffe://cluster.local/ns/other/sa/x"}}).DER, 0), codes.PermissionDenied)
			good(t, b, "default", "default")
			bad(b, entry("", tok, harness.NewCSR(t, harness.CSROptions{IsCA: true}).DER, 0), codes.InvalidArgument)
			good(t, b, "billing", "api")
			bad(b, entry("", tok, []byte("not a CSR"), 0), codes.InvalidArgument)
			return b
		}},
		{name: "64 good entries of 8 service accounts", build: func(t *testing.T) *built {
			b := &built{}
			for i := range 64 {
				good(t, b, "ns"+fmt.Sprint(i%8), "sa")
			}
			return b
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b := tt.build(t)
			before := issued(t, d)
			resp, err := a.Client.BatchSignSVIDs(harness.Context(t), &cav1.BatchSignSVIDsRequest{Requests: b.entries})
			require.NoError(t, err)
			require.Len(t, resp.GetResults(), len(b.entries))
			signed := 0
			serials := map[string]bool{}
			for i, res := range resp.GetResults() {
				require.Equal(t, b.want[i].id, res.GetId(), "result %d out of order", i)
				if b.want[i].code != codes.OK {
					require.Equal(t, b.want[i].code, codes.Code(res.GetCode()), "result %d (message %q)", i, res.GetMessage())
					require.Nil(t, res.GetSvid(), "result %d", i)
					continue
				}
				svid := requireSigned(t, d, res, b.csrs[i], b.ids[i])
				serial := svid.Certificates[0].SerialNumber.Text(16)
				require.False(t, serials[serial], "serial %s issued twice", serial)
				serials[serial] = true
				require.True(t, d.HasCertificate(t, serial))
				signed++
			}
			require.Equal(t, before.plus(signed), issued(t, d))
			requireHealthy(t, d)
		})
	}
}
