package tokens

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/lanyard-id/lanyard/internal/clocktest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	testIssuer   = "https://kubernetes.default.svc.cluster.local"
	testCluster  = "east"
	testAudience = "lanyard"
)

// newFakeClock is the shared fake clock (internal/clocktest) at a fixed
// time near real tokens' issue times.
func newFakeClock() *clocktest.Clock {
	return clocktest.New(time.Unix(1_760_000_000, 0).UTC())
}

// Keys are made once per test binary: RSA generation is slow.
var (
	rsaKeyA = sync.OnceValue(func() *rsa.PrivateKey { return mustRSA(2048) })
	rsaKeyB = sync.OnceValue(func() *rsa.PrivateKey { return mustRSA(2048) })
	ecKey   = sync.OnceValue(func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			panic(err)
		}
		return k
	})
)

func mustRSA(bits int) *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		panic(err)
	}
	return k
}

// testKey signs test tokens with any header and claims.
type testKey struct {
	priv crypto.Signer
	kid  string
	alg  jose.SignatureAlgorithm
}

func keyA() testKey  { return testKey{priv: rsaKeyA(), kid: "key-a", alg: jose.RS256} }
func keyB() testKey  { return testKey{priv: rsaKeyB(), kid: "key-b", alg: jose.RS256} }
func keyEC() testKey { return testKey{priv: ecKey(), kid: "key-ec", alg: jose.ES256} }

// jwk is the public key as published, without alg.
func (k testKey) jwk() jose.JSONWebKey {
	return jose.JSONWebKey{Key: k.priv.Public(), KeyID: k.kid, Use: "sig"}
}

// sign signs claims (marshalled with encoding/json) with the key's alg and kid.
func (k testKey) sign(t testing.TB, claims any) string {
	t.Helper()
	return k.signAs(t, k.alg, k.kid, claims)
}

// signAs signs claims with alg and kid in the header.
func (k testKey) signAs(t testing.TB, alg jose.SignatureAlgorithm, kid string, claims any) string {
	t.Helper()
	payload, err := json.Marshal(claims)
	require.NoError(t, err)
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: jose.JSONWebKey{Key: k.priv, KeyID: kid}}, nil)
	require.NoError(t, err)
	jws, err := signer.Sign(payload)
	require.NoError(t, err)
	tok, err := jws.CompactSerialize()
	require.NoError(t, err)
	return tok
}

// jwksJSON is a key set document with the given keys.
func jwksJSON(t testing.TB, keys ...jose.JSONWebKey) []byte {
	t.Helper()
	b, err := json.Marshal(jose.JSONWebKeySet{Keys: keys})
	require.NoError(t, err)
	return b
}

// unsignedToken builds header.payload.sig from raw JSON parts.
func unsignedToken(header, payload string, sig string) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(header)) + "." + enc([]byte(payload)) + "." + sig
}

// claims is a token payload as a map, so tests can change any claim.
type claims map[string]any

// k8sTokenClaims are the claims of a valid pod-bound projected token
// issued at now.
func k8sTokenClaims(now time.Time) claims {
	return claims{
		"aud": []string{testAudience, "istio-ca"},
		"exp": now.Add(time.Hour).Unix(),
		"iat": now.Unix(),
		"nbf": now.Unix(),
		"iss": testIssuer,
		"jti": "3b1f1d50-7a0c-4a7e-9c43-5a6c5c7e2d11",
		"sub": "system:serviceaccount:default:web",
		"kubernetes.io": map[string]any{
			"namespace":      "default",
			"serviceaccount": map[string]any{"name": "web", "uid": "sa-uid-1"},
			"pod":            map[string]any{"name": "web-7d9f", "uid": "pod-uid-1"},
			"node":           map[string]any{"name": "node-1", "uid": "node-uid-1"},
		},
	}
}

func (c claims) with(key string, v any) claims {
	out := make(claims, len(c))
	for k, val := range c {
		out[k] = val
	}
	out[key] = v
	return out
}

func (c claims) without(key string) claims {
	out := c.with(key, nil)
	delete(out, key)
	return out
}

// countingVerifier is a fake Verifier that counts calls and answers with
// a copy of sa, or err.
type countingVerifier struct {
	calls atomic.Int64
	sa    ServiceAccount
	err   error
}

func (f *countingVerifier) Verify(_ context.Context, _, audience string) (*ServiceAccount, error) {
	f.calls.Add(1)
	if f.err != nil {
		return nil, f.err
	}
	sa := f.sa
	sa.Audiences = []string{audience}
	return &sa, nil
}

// hmacToken signs claims with HS256 and the given secret.
func hmacToken(t testing.TB, secret []byte, kid string, claims any) string {
	t.Helper()
	payload, err := json.Marshal(claims)
	require.NoError(t, err)
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: jose.JSONWebKey{Key: secret, KeyID: kid}}, nil)
	require.NoError(t, err)
	jws, err := signer.Sign(payload)
	require.NoError(t, err)
	tok, err := jws.CompactSerialize()
	require.NoError(t, err)
	return tok
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
