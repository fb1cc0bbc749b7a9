package integration

import (
	"bytes"
	"crypto/rand"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/json"
	"encoding/pem"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/lanyard-id/lanyard/integration/harness"
	cav1 "github.com/lanyard-id/lanyard/proto/lanyard/ca/v1"
)

// TestRejections sends every kind of bad token and bad CSR, each as a
// BatchSignSVIDs entry and as an AttestAgent request. Each must get its
// code and no SVID, leave no record (store and issued counter unchanged),
// and leave the process healthy: a good request right after succeeds.
// Finally no token may appear in the process's log.
func TestRejections(t *testing.T) {
	t.Parallel()
	d, a := startDev(t)
	f := newForger(t, d)
	const agentNode = "node-b"
	goodWorkload := workloadToken(t, d, a, "default", "default")
	goodAgent := d.AgentToken(t, agentNode)
	wlTemplate, agTemplate := templateOf(t, goodWorkload), templateOf(t, goodAgent)
	other := "spiffe://" + d.TrustDomain.Name() + "/ns/other/sa/x"
	var sent []string // every token sent, for the log check

	goodCSR := func(t *testing.T) *harness.CSR { return harness.NewCSR(t, harness.CSROptions{}) }
	sendBatch := func(t *testing.T, tok string, csr []byte) (codes.Code, string, bool) {
		sent = append(sent, tok)
		res := signOne(t, a, entry("bad", tok, csr, 0))
		return codes.Code(res.GetCode()), res.GetMessage(), res.GetSvid() != nil
	}
	sendAttest := func(t *testing.T, tok string, csr []byte) (codes.Code, string, bool) {
		sent = append(sent, tok)
		resp, err := d.Client(t).AttestAgent(harness.Context(t), &cav1.AttestAgentRequest{Token: tok, Csr: csr})
		return status.Code(err), status.Convert(err).Message(), resp.GetSvid() != nil
	}
	goodBatch := func(t *testing.T) {
		csr := goodCSR(t)
		requireSigned(t, d, signOne(t, a, entry("good", goodWorkload, csr.DER, 0)), csr, d.WorkloadID("default", "default"))
	}
	goodAttest := func(t *testing.T) {
		_, _, err := d.AttestAgent(t, goodAgent, goodCSR(t))
		require.NoError(t, err, "good AttestAgent right after")
	}

	// An unmodified crafted token must be accepted: otherwise the refusals
	// below could come from a faulty forgery instead of the CA's checks.
	t.Run("control: crafted token without defect is accepted", func(t *testing.T) {
		csr := goodCSR(t)
		res := signOne(t, a, entry("control", f.sign(t, wlTemplate.clone(t)), csr.DER, 0))
		requireSigned(t, d, res, csr, d.WorkloadID("default", "default"))
		_, _, err := d.AttestAgent(t, f.sign(t, agTemplate.clone(t)), goodCSR(t))
		require.NoError(t, err)
	})

	now := time.Now()
	unix := func(tm time.Time) json.Number { return json.Number(strconv.FormatInt(tm.Unix(), 10)) }
	for _, tt := range []struct {
		name string
		// token makes the token from a copy of a real token's claims; nil
		// sends the real token.
		token func(t *testing.T, c claims) string
		// csr makes the CSR; nil sends a good P-256 CSR without SAN.
		csr  func(t *testing.T) []byte
		code codes.Code
	}{
		// Tokens.
		{name: "garbage token", code: codes.Unauthenticated,
			token: func(*testing.T, claims) string { return "garbage" }},
		{name: "garbage token in three parts", code: codes.Unauthenticated,
			token: func(*testing.T, claims) string { return "eyJhbGciOi.eyJzdWIi.c2lnbmF0dXJl" }},
		{name: "empty token", code: codes.Unauthenticated,
			token: func(*testing.T, claims) string { return "" }},
		{name: "alg none", code: codes.Unauthenticated, token: f.algNone},
		{name: "HS256 with the RSA public key as HMAC secret", code: codes.Unauthenticated, token: f.hs256WithPublicKey},
		{name: "unknown kid", code: codes.Unauthenticated,
			token: func(t *testing.T, c claims) string { return f.signKid(t, c, "unknown-kid") }},
		{name: "issuer's kid, another key", code: codes.Unauthenticated, token: f.signOtherKey},
		{name: "expired", code: codes.Unauthenticated, token: func(t *testing.T, c claims) string {
			c["iat"], c["nbf"], c["exp"] = unix(now.Add(-70*time.Minute)), unix(now.Add(-70*time.Minute)), unix(now.Add(-10*time.Minute))
			return f.sign(t, c)
		}},
		{name: "no exp", code: codes.Unauthenticated, token: func(t *testing.T, c claims) string {
			delete(c, "exp")
			return f.sign(t, c)
		}},
		{name: "nbf 5m in the future", code: codes.Unauthenticated, token: func(t *testing.T, c claims) string {
			c["nbf"] = unix(now.Add(5 * time.Minute))
			return f.sign(t, c)
		}},
		{name: "iat 5m in the future", code: codes.Unauthenticated, token: func(t *testing.T, c claims) string {
			c["iat"] = unix(now.Add(5 * time.Minute))
			return f.sign(t, c)
		}},
		{name: "wrong issuer", code: codes.Unauthenticated, token: func(t *testing.T, c claims) string {
			c["iss"] = "https://kubernetes.default.svc.cluster.local"
			return f.sign(t, c)
		}},
		{name: "wrong audience", code: codes.Unauthenticated, token: func(t *testing.T, c claims) string {
			c["aud"] = []string{"istio-ca"}
			return f.sign(t, c)
		}},
		{name: "no audience", code: codes.Unauthenticated, token: func(t *testing.T, c claims) string {
			delete(c, "aud")
			return f.sign(t, c)
		}},
		{name: "sub disagrees with the kubernetes.io claim", code: codes.Unauthenticated, token: func(t *testing.T, c claims) string {
			c["sub"] = "system:serviceaccount:kube-system:default"
			return f.sign(t, c)
		}},
		{name: "no kubernetes.io claim (legacy token)", code: codes.Unauthenticated, token: func(t *testing.T, c claims) string {
			delete(c, "kubernetes.io")
			return f.sign(t, c)
		}},
		{name: "kubernetes.io node name that is not a valid name", code: codes.Unauthenticated, token: func(t *testing.T, c claims) string {
			c.kubernetes(t)["node"].(map[string]any)["name"] = "node-a/../../ns/kube-system"
			return f.sign(t, c)
		}},
		{name: "kubernetes.io namespace that is not a valid name", code: codes.Unauthenticated, token: func(t *testing.T, c claims) string {
			k := c.kubernetes(t)
			sa := k["serviceaccount"].(map[string]any)["name"].(string)
			k["namespace"] = "default/sa/x"
			c["sub"] = "system:serviceaccount:default/sa/x:" + sa
			return f.sign(t, c)
		}},
		{name: "token over 16 KiB", code: codes.Unauthenticated, token: func(t *testing.T, c claims) string {
			c["padding"] = strings.Repeat("x", 17<<10)
			return f.sign(t, c)
		}},

		// CSRs, with a good token.
		{name: "CSR for another identity", code: codes.PermissionDenied, csr: func(t *testing.T) []byte {
			return harness.NewCSR(t, harness.CSROptions{URIs: []string{other}}).DER
		}},
		{name: "extra DNS SAN", code: codes.PermissionDenied, csr: func(t *testing.T) []byte {
			return harness.NewCSR(t, harness.CSROptions{DNSNames: []string{"evil.example.com"}}).DER
		}},
		{name: "extra IP SAN", code: codes.PermissionDenied, csr: func(t *testing.T) []byte {
			return harness.NewCSR(t, harness.CSROptions{IPs: []net.IP{net.ParseIP("10.0.0.1")}}).DER
		}},
		{name: "two URI SANs", code: codes.InvalidArgument, csr: func(t *testing.T) []byte {
			return harness.NewCSR(t, harness.CSROptions{URIs: []string{other, other + "y"}}).DER
		}},
		{name: "URI SAN that is not a SPIFFE ID", code: codes.InvalidArgument, csr: func(t *testing.T) []byte {
			return harness.NewCSR(t, harness.CSROptions{URIs: []string{"https://example.com/x"}}).DER
		}},
		{name: "CA:true", code: codes.InvalidArgument, csr: func(t *testing.T) []byte {
			return harness.NewCSR(t, harness.CSROptions{IsCA: true}).DER
		}},
		{name: "keyCertSign key usage", code: codes.InvalidArgument, csr: func(t *testing.T) []byte {
			// Bits 0 (digitalSignature) and 5 (keyCertSign).
			v, err := asn1.Marshal(asn1.BitString{Bytes: []byte{0x84}, BitLength: 6})
			require.NoError(t, err)
			return harness.NewCSR(t, harness.CSROptions{Extensions: []pkix.Extension{
				{Id: asn1.ObjectIdentifier{2, 5, 29, 15}, Critical: true, Value: v},
			}}).DER
		}},
		{name: "unknown critical extension", code: codes.InvalidArgument, csr: func(t *testing.T) []byte {
			return harness.NewCSR(t, harness.CSROptions{Extensions: []pkix.Extension{
				{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1}, Critical: true, Value: []byte{0x05, 0x00}},
			}}).DER
		}},
		{name: "RSA-1024", code: codes.InvalidArgument, csr: func(t *testing.T) []byte {
			return harness.NewCSR(t, harness.CSROptions{Key: harness.RSA(1024)}).DER
		}},
		{name: "P-224", code: codes.InvalidArgument, csr: func(t *testing.T) []byte {
			return harness.NewCSR(t, harness.CSROptions{Key: harness.P224}).DER
		}},
		{name: "P-521", code: codes.InvalidArgument, csr: func(t *testing.T) []byte {
			return harness.NewCSR(t, harness.CSROptions{Key: harness.P521}).DER
		}},
		{name: "RSA-16384, refused before its signature is checked", code: codes.InvalidArgument, csr: func(t *testing.T) []byte {
			return harness.FakeRSACSR(t, 16384)
		}},
		{name: "RSA-2048 with a random signature", code: codes.InvalidArgument, csr: func(t *testing.T) []byte {
			return harness.FakeRSACSR(t, 2048)
		}},
		{name: "bad signature", code: codes.InvalidArgument, csr: func(t *testing.T) []byte {
			der := harness.NewCSR(t, harness.CSROptions{}).DER
			der[len(der)-1] ^= 0xff // last byte of the signature
			return der
		}},
		{name: "truncated DER", code: codes.InvalidArgument, csr: func(t *testing.T) []byte {
			der := harness.NewCSR(t, harness.CSROptions{}).DER
			return der[:len(der)/2]
		}},
		{name: "PEM instead of DER", code: codes.InvalidArgument, csr: func(t *testing.T) []byte {
			return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: harness.NewCSR(t, harness.CSROptions{}).DER})
		}},
		{name: "oversize CSR (70 KiB non-critical extension)", code: codes.InvalidArgument, csr: func(t *testing.T) []byte {
			der := harness.NewCSR(t, harness.CSROptions{Extensions: []pkix.Extension{
				{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 2}, Value: bytes.Repeat([]byte{'x'}, 70<<10)},
			}}).DER
			require.Greater(t, len(der), 64<<10)
			return der
		}},
		{name: "oversize CSR (70 KiB of random bytes)", code: codes.InvalidArgument, csr: func(t *testing.T) []byte {
			b := make([]byte, 70<<10)
			rand.Read(b)
			return b
		}},
		{name: "empty CSR", code: codes.InvalidArgument, csr: func(*testing.T) []byte { return nil }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			workloadTok, agentTok := goodWorkload, goodAgent
			if tt.token != nil {
				workloadTok, agentTok = tt.token(t, wlTemplate.clone(t)), tt.token(t, agTemplate.clone(t))
			}
			csr := func(t *testing.T) []byte { return goodCSR(t).DER }
			if tt.csr != nil {
				csr = tt.csr
			}
			t.Run("BatchSignSVIDs", func(t *testing.T) {
				requireRefused(t, d, tt.code, func(t *testing.T) (codes.Code, string, bool) {
					return sendBatch(t, workloadTok, csr(t))
				}, goodBatch)
			})
			t.Run("AttestAgent", func(t *testing.T) {
				requireRefused(t, d, tt.code, func(t *testing.T) (codes.Code, string, bool) {
					return sendAttest(t, agentTok, csr(t))
				}, goodAttest)
			})
		})
	}

	t.Run("no token in the log", func(t *testing.T) {
		out := d.Output()
		require.NotEmpty(t, out)
		for _, tok := range append(sent, goodWorkload, goodAgent) {
			if len(tok) < 20 {
				continue // "garbage" and the like could appear by chance
			}
			require.NotContains(t, out, tok)
			if parts := strings.Split(tok, "."); len(parts) == 3 && len(parts[2]) >= 20 {
				require.NotContains(t, out, parts[2], "a token signature is in the log")
			}
		}
	})
}

const metricRejected = "lanyard_ca_requests_rejected_total"

// requireRefused sends a bad request and checks: the wanted code, no SVID,
// no new record (store and issued counter), the refusal counted once by
// code, the process healthy, and a good request right after succeeds and is
// recorded.
func requireRefused(t *testing.T, d *harness.Dev, want codes.Code,
	send func(*testing.T) (codes.Code, string, bool), good func(*testing.T)) {
	t.Helper()
	before := issued(t, d)
	rejectedLabel := `code="` + want.String() + `"`
	rejected := d.Metric(t, metricRejected, rejectedLabel)
	code, msg, gotSVID := send(t)
	require.Equal(t, want, code, "code (message %q)", msg)
	require.NotEmpty(t, msg, "a refusal without a message")
	require.False(t, gotSVID, "a refused request got an SVID")
	require.Equal(t, before, issued(t, d), "a refused request changed the records or the issued counter")
	require.Equal(t, rejected+1, d.Metric(t, metricRejected, rejectedLabel), "%s{%s} not counted once", metricRejected, rejectedLabel)
	requireHealthy(t, d)
	good(t)
	require.Equal(t, before.plus(1), issued(t, d), "the good request after it was not counted once")
}
