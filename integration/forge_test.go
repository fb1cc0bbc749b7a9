package integration

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/stretchr/testify/require"

	"github.com/lanyard-id/lanyard/integration/harness"
)

// forger crafts tokens with the dev issuer's own key, starting from the
// claims of real tokens minted by `lanyard dev token`, so that each crafted
// token differs from an acceptable one only where a test says.
type forger struct {
	key *rsa.PrivateKey
	kid string
}

func newForger(t *testing.T, d *harness.Dev) *forger {
	t.Helper()
	key, kid := d.IssuerKey(t)
	return &forger{key: key, kid: kid}
}

// claims is the payload of a token, numbers kept as json.Number.
type claims map[string]any

// templateOf returns a copy of the claims of a real token.
func templateOf(t *testing.T, token string) claims {
	t.Helper()
	hdr, c := harness.DecodeToken(t, token)
	require.Equal(t, "RS256", hdr["alg"], "real token header %v", hdr)
	return c
}

// kubernetes returns the kubernetes.io claim, to change in place.
func (c claims) kubernetes(t *testing.T) map[string]any {
	t.Helper()
	k, ok := c["kubernetes.io"].(map[string]any)
	require.True(t, ok, "token has no kubernetes.io claim: %v", c)
	return k
}

// clone deep-copies c through JSON.
func (c claims) clone(t *testing.T) claims {
	t.Helper()
	return decodeJSON(t, mustJSON(t, c))
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return b
}

func decodeJSON(t *testing.T, b []byte) claims {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var c claims
	require.NoError(t, dec.Decode(&c))
	return c
}

// sign signs c as the dev issuer does: RS256, its kid, no typ.
func (f *forger) sign(t *testing.T, c claims) string {
	t.Helper()
	return signJWS(t, jose.RS256, f.key, f.kid, c)
}

// signKid signs c with the issuer's key but another kid.
func (f *forger) signKid(t *testing.T, c claims, kid string) string {
	t.Helper()
	return signJWS(t, jose.RS256, f.key, kid, c)
}

// signOtherKey signs c with a new RSA key under the issuer's kid.
func (f *forger) signOtherKey(t *testing.T, c claims) string {
	t.Helper()
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	return signJWS(t, jose.RS256, other, f.kid, c)
}

// hs256WithPublicKey is the algorithm-confusion attack: HS256 with the
// issuer's RSA public key (PEM, as a verifier would hold it) as the HMAC
// secret.
func (f *forger) hs256WithPublicKey(t *testing.T, c claims) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(&f.key.PublicKey)
	require.NoError(t, err)
	secret := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	return signJWS(t, jose.HS256, secret, f.kid, c)
}

// algNone is an unsigned token: {"alg":"none","kid":...}, empty signature.
func (f *forger) algNone(t *testing.T, c claims) string {
	t.Helper()
	hdr := mustJSON(t, map[string]string{"alg": "none", "kid": f.kid})
	return base64.RawURLEncoding.EncodeToString(hdr) + "." + base64.RawURLEncoding.EncodeToString(mustJSON(t, c)) + "."
}

func signJWS(t *testing.T, alg jose.SignatureAlgorithm, key any, kid string, c claims) string {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key},
		(&jose.SignerOptions{}).WithHeader(jose.HeaderKey("kid"), kid))
	require.NoError(t, err)
	jws, err := signer.Sign(mustJSON(t, c))
	require.NoError(t, err)
	tok, err := jws.CompactSerialize()
	require.NoError(t, err)
	return tok
}
