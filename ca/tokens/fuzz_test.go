package tokens

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// FuzzJWKSVerify feeds arbitrary tokens to a JWKSVerifier with a static
// key set: it must never panic, accept only well-formed identities, and
// reject with one of the token sentinels without echoing the token.
func FuzzJWKSVerify(f *testing.F) {
	clock := newFakeClock()
	now := clock.Now()
	base := k8sTokenClaims(now)
	f.Add(keyA().sign(f, base))
	f.Add(keyEC().sign(f, base.with("aud", testAudience)))
	f.Add(keyA().signAs(f, jose.PS256, "", base))
	f.Add(unsignedToken(`{"alg":"none","kid":"key-a"}`, mustJSON(f, base), ""))
	f.Add(unsignedToken(`{"alg":"RS256","kid":"key-a","crit":["exp"]}`, mustJSON(f, base), "AAAA"))
	f.Add(hmacToken(f, []byte("0123456789abcdef0123456789abcdef"), "key-a", base))
	f.Add(keyB().sign(f, base))
	f.Add(keyA().sign(f, base.with("exp", now.Add(-time.Hour).Unix())))
	f.Add(keyA().sign(f, base.without("kubernetes.io")))
	f.Add("garbage")
	f.Add("a.b.c")
	f.Add("..")
	f.Add("")
	f.Add("eyJhbGciOiJSUzI1NiJ9.e30.")

	v := staticVerifier(f, clock)
	f.Fuzz(func(t *testing.T, token string) {
		sa, err := v.Verify(context.Background(), token, testAudience)
		if err == nil {
			if sa == nil || sa.Cluster != testCluster || sa.Namespace == "" || sa.Name == "" || sa.UID == "" {
				t.Fatalf("accepted token gave incomplete identity %+v", sa)
			}
			if sa.Issuer != testIssuer || sa.Expiry.IsZero() {
				t.Fatalf("accepted token with issuer %q, expiry %v", sa.Issuer, sa.Expiry)
			}
			return
		}
		if sa != nil {
			t.Fatalf("error %v with a result", err)
		}
		if !errors.Is(err, ErrInvalidToken) && !errors.Is(err, ErrExpired) && !errors.Is(err, ErrWrongAudience) {
			t.Fatalf("error %v wraps no token sentinel", err)
		}
		if len(token) >= 32 && strings.Contains(err.Error(), token) {
			t.Fatalf("error echoes the token: %v", err)
		}
	})
}

// FuzzParseKeySet feeds arbitrary key set documents to the parser: it must
// never panic and keep only public signature keys.
func FuzzParseKeySet(f *testing.F) {
	f.Add(string(jwksJSON(f, keyA().jwk(), keyEC().jwk())))
	f.Add(`{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}`)
	f.Add(`{"keys":[{"kty":"RSA","n":"AA","e":"AQAB"}]}`)
	f.Add(`{"keys":[{"kty":"EC","crv":"P-256","x":"","y":""}]}`)
	f.Add(`{"keys":null}`)
	f.Add(`[]`)
	log := discardLogger()
	f.Fuzz(func(t *testing.T, doc string) {
		keys, err := parseKeySet([]byte(doc), log)
		if err != nil {
			return
		}
		if len(keys) == 0 || len(keys) > maxKeys {
			t.Fatalf("%d keys without error", len(keys))
		}
		for _, k := range keys {
			if !k.IsPublic() {
				t.Fatalf("kept a non-public key %T", k.Key)
			}
		}
	})
}

// FuzzUnverifiedExpiry feeds arbitrary tokens to the exp decoder used by
// the TokenReview path.
func FuzzUnverifiedExpiry(f *testing.F) {
	f.Add(reviewToken(time.Unix(1_760_000_000, 0)))
	f.Add(unsignedToken(`{}`, `{"exp":1e300}`, ""))
	f.Add(unsignedToken(`{}`, `{"exp":-1}`, ""))
	f.Add("a.b.c")
	f.Fuzz(func(t *testing.T, token string) {
		if _, err := unverifiedExpiry(token); err != nil && !errors.Is(err, ErrInvalidToken) {
			t.Fatalf("error %v is not ErrInvalidToken", err)
		}
	})
}
