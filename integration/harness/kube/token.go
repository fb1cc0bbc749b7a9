package kube

import (
	"bytes"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
)

// Claims decodes a token's claims without verifying it (numbers as
// json.Number, so they survive a round trip), and its header's kid.
func Claims(t testing.TB, token string) (claims map[string]any, kid string) {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("kube: token has %d parts, want 3", len(parts))
	}
	decode := func(s string) map[string]any {
		raw, err := base64.RawURLEncoding.DecodeString(s)
		if err != nil {
			t.Fatalf("kube: token part: %v", err)
		}
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber()
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			t.Fatalf("kube: token part: %v", err)
		}
		return m
	}
	header := decode(parts[0])
	kid, _ = header["kid"].(string)
	return decode(parts[1]), kid
}

// Resign returns token with its claims changed by edit and signed again
// with this API server's own service-account key and kid: a token the API
// server and its JWKS accept in every respect but the edit (an exp in the
// past, for instance, which TokenRequest never issues).
func (k *Kube) Resign(t testing.TB, token string, edit func(claims map[string]any)) string {
	t.Helper()
	return ResignWith(t, k.SigningKey(), token, edit)
}

// ResignWith is Resign with any RSA key, keeping the token's kid: with a
// key the issuer never published it makes a forgery that names the
// issuer.
func ResignWith(t testing.TB, key *rsa.PrivateKey, token string, edit func(claims map[string]any)) string {
	t.Helper()
	claims, kid := Claims(t, token)
	if edit != nil {
		edit(claims)
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatalf("kube: claims: %v", err)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: key},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", kid))
	if err != nil {
		t.Fatalf("kube: signer: %v", err)
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		t.Fatalf("kube: sign: %v", err)
	}
	out, err := jws.CompactSerialize()
	if err != nil {
		t.Fatalf("kube: serialize: %v", err)
	}
	return out
}
