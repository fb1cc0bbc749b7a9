package tokens

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/stretchr/testify/require"

	"github.com/lanyard-id/lanyard/internal/clocktest"
)

// staticVerifier returns a verifier over a static key set of keys A and EC.
func staticVerifier(t testing.TB, clock *clocktest.Clock, mod ...func(*JWKSConfig)) *JWKSVerifier {
	t.Helper()
	cfg := JWKSConfig{
		Cluster: testCluster,
		Issuer:  testIssuer,
		JWKS:    jwksJSON(t, keyA().jwk(), keyEC().jwk()),
		Clock:   clock.Now,
	}
	for _, m := range mod {
		m(&cfg)
	}
	v, err := NewJWKSVerifier(cfg)
	require.NoError(t, err)
	return v
}

func TestJWKSVerifierAccepts(t *testing.T) {
	clock := newFakeClock()
	now := clock.Now()
	base := k8sTokenClaims(now)
	for _, tt := range []struct {
		name  string
		token string
		want  ServiceAccount
	}{
		{
			name:  "pod-bound RS256 token",
			token: keyA().sign(t, base),
			want: ServiceAccount{
				Cluster: testCluster, Issuer: testIssuer, Namespace: "default", Name: "web", UID: "sa-uid-1",
				PodName: "web-7d9f", PodUID: "pod-uid-1", NodeName: "node-1", NodeUID: "node-uid-1",
				Audiences: []string{testAudience, "istio-ca"}, Expiry: now.Add(time.Hour), IssuedAt: now,
			},
		},
		{
			name: "ES256 key, no pod or node, audience as string",
			token: keyEC().sign(t, base.with("aud", testAudience).with("kubernetes.io", map[string]any{
				"namespace": "default", "serviceaccount": map[string]any{"name": "web", "uid": "sa-uid-1"},
			})),
			want: ServiceAccount{
				Cluster: testCluster, Issuer: testIssuer, Namespace: "default", Name: "web", UID: "sa-uid-1",
				Audiences: []string{testAudience}, Expiry: now.Add(time.Hour), IssuedAt: now,
			},
		},
		{
			name:  "PS256 with an RSA key",
			token: keyA().signAs(t, jose.PS256, "key-a", base.with("aud", []string{testAudience})),
			want: ServiceAccount{
				Cluster: testCluster, Issuer: testIssuer, Namespace: "default", Name: "web", UID: "sa-uid-1",
				PodName: "web-7d9f", PodUID: "pod-uid-1", NodeName: "node-1", NodeUID: "node-uid-1",
				Audiences: []string{testAudience}, Expiry: now.Add(time.Hour), IssuedAt: now,
			},
		},
		{
			name:  "no kid: every key is tried",
			token: keyEC().signAs(t, jose.ES256, "", base.with("kubernetes.io", map[string]any{"namespace": "default", "serviceaccount": map[string]any{"name": "web", "uid": "u"}})),
			want: ServiceAccount{
				Cluster: testCluster, Issuer: testIssuer, Namespace: "default", Name: "web", UID: "u",
				Audiences: []string{testAudience, "istio-ca"}, Expiry: now.Add(time.Hour), IssuedAt: now,
			},
		},
		{
			name: "expired within leeway, nbf and iat in the future within leeway",
			token: keyA().sign(t, base.with("exp", now.Add(-59*time.Second).Unix()).
				with("nbf", now.Add(59*time.Second).Unix()).with("iat", now.Add(59*time.Second).Unix())),
			want: ServiceAccount{
				Cluster: testCluster, Issuer: testIssuer, Namespace: "default", Name: "web", UID: "sa-uid-1",
				PodName: "web-7d9f", PodUID: "pod-uid-1", NodeName: "node-1", NodeUID: "node-uid-1",
				Audiences: []string{testAudience, "istio-ca"}, Expiry: now.Add(-59 * time.Second),
				IssuedAt: now.Add(59 * time.Second),
			},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			v := staticVerifier(t, clock)
			sa, err := v.Verify(context.Background(), tt.token, testAudience)
			require.NoError(t, err)
			require.Equal(t, tt.want.Expiry.Unix(), sa.Expiry.Unix())
			sa.Expiry = tt.want.Expiry
			require.Equal(t, tt.want.IssuedAt.Unix(), sa.IssuedAt.Unix(), "iat")
			sa.IssuedAt = tt.want.IssuedAt
			require.Equal(t, tt.want, *sa)
		})
	}
}

func TestJWKSVerifierRejects(t *testing.T) {
	clock := newFakeClock()
	now := clock.Now()
	base := k8sTokenClaims(now)
	pubDER, err := x509.MarshalPKIXPublicKey(rsaKeyA().Public())
	require.NoError(t, err)
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	hmacWithPublicKey := hmacToken(t, pubPEM, "key-a", base)
	legacy := claims{
		"iss":                                    "kubernetes/serviceaccount",
		"sub":                                    "system:serviceaccount:default:web",
		"kubernetes.io/serviceaccount/namespace": "default",
		"kubernetes.io/serviceaccount/secret.name":          "web-token-abcde",
		"kubernetes.io/serviceaccount/service-account.name": "web",
		"kubernetes.io/serviceaccount/service-account.uid":  "sa-uid-1",
	}
	for _, tt := range []struct {
		name     string
		token    string
		audience string // default testAudience
		want     error
		reason   string
	}{
		{name: "empty", token: "", want: ErrInvalidToken},
		{name: "garbage", token: "not.a.jwt", want: ErrInvalidToken, reason: "malformed"},
		{name: "two parts", token: "abc.def", want: ErrInvalidToken},
		{name: "oversize", token: strings.Repeat("a", MaxTokenSize+1), want: ErrInvalidToken, reason: "larger than"},
		{name: "alg none", token: unsignedToken(`{"alg":"none","kid":"key-a"}`, mustJSON(t, base), ""), want: ErrInvalidToken},
		{name: "HS256 with the public key as secret", token: hmacWithPublicKey, want: ErrInvalidToken},
		{name: "signed by another key with a known kid", token: keyB().signAs(t, jose.RS256, "key-a", base), want: ErrInvalidToken, reason: "signature"},
		{name: "unknown kid", token: keyB().sign(t, base), want: ErrInvalidToken, reason: "unknown key id"},
		{name: "tampered payload", token: tamper(keyA().sign(t, base)), want: ErrInvalidToken},
		{name: "expired", token: keyA().sign(t, base.with("exp", now.Add(-61*time.Second).Unix())), want: ErrExpired, reason: "expired"},
		{name: "no exp", token: keyA().sign(t, base.without("exp")), want: ErrInvalidToken, reason: "no exp"},
		{name: "exp not a number", token: keyA().sign(t, base.with("exp", "tomorrow")), want: ErrInvalidToken, reason: "malformed claims"},
		{name: "nbf in the future", token: keyA().sign(t, base.with("nbf", now.Add(61*time.Second).Unix())), want: ErrExpired, reason: "nbf"},
		{name: "iat in the future beyond leeway", token: keyA().sign(t, base.with("iat", now.Add(2*time.Minute).Unix())), want: ErrExpired, reason: "iat"},
		{name: "wrong issuer", token: keyA().sign(t, base.with("iss", "https://evil.example")), want: ErrInvalidToken, reason: "issuer"},
		{name: "no issuer", token: keyA().sign(t, base.without("iss")), want: ErrInvalidToken, reason: "issuer"},
		{name: "wrong audience (string)", token: keyA().sign(t, base.with("aud", "istio-ca")), want: ErrWrongAudience},
		{name: "wrong audience (list)", token: keyA().sign(t, base.with("aud", []string{"istio-ca", "https://kubernetes.default.svc"})), want: ErrWrongAudience},
		{name: "no audience", token: keyA().sign(t, base.without("aud")), want: ErrWrongAudience},
		{name: "no audience requested", token: keyA().sign(t, base), audience: "-", want: ErrWrongAudience},
		{name: "sub names another service account", token: keyA().sign(t, base.with("sub", "system:serviceaccount:default:admin")), want: ErrInvalidToken, reason: "sub"},
		{name: "sub names another namespace", token: keyA().sign(t, base.with("sub", "system:serviceaccount:kube-system:web")), want: ErrInvalidToken, reason: "sub"},
		{name: "sub not a service account", token: keyA().sign(t, base.with("sub", "alice")), want: ErrInvalidToken, reason: "sub"},
		{name: "legacy secret-based token", token: keyA().sign(t, legacy), want: ErrInvalidToken},
		{name: "legacy claims with projected iss", token: keyA().sign(t, legacy.with("iss", testIssuer).with("exp", now.Add(time.Hour).Unix()).with("aud", testAudience)), want: ErrInvalidToken, reason: "legacy"},
		{name: "no serviceaccount in kubernetes.io", token: keyA().sign(t, base.with("kubernetes.io", map[string]any{"namespace": "default"})), want: ErrInvalidToken, reason: "serviceaccount"},
		{name: "invalid namespace", token: keyA().sign(t, base.with("sub", "system:serviceaccount:Bad_NS:web").with("kubernetes.io", map[string]any{"namespace": "Bad_NS", "serviceaccount": map[string]any{"name": "web", "uid": "u"}})), want: ErrInvalidToken, reason: "namespace"},
		{name: "no service account uid", token: keyA().sign(t, base.with("kubernetes.io", map[string]any{"namespace": "default", "serviceaccount": map[string]any{"name": "web"}})), want: ErrInvalidToken, reason: "uid"},
		{name: "pod claim without name", token: keyA().sign(t, base.with("kubernetes.io", map[string]any{"namespace": "default", "serviceaccount": map[string]any{"name": "web", "uid": "u"}, "pod": map[string]any{"uid": "p"}})), want: ErrInvalidToken, reason: "pod"},
		{name: "kubernetes.io not an object", token: keyA().sign(t, base.with("kubernetes.io", "default")), want: ErrInvalidToken, reason: "malformed claims"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			v := staticVerifier(t, clock)
			aud := tt.audience
			switch aud {
			case "":
				aud = testAudience
			case "-":
				aud = ""
			}
			sa, err := v.Verify(context.Background(), tt.token, aud)
			require.ErrorIs(t, err, tt.want)
			require.Nil(t, sa)
			require.Contains(t, err.Error(), tt.reason)
			if len(tt.token) > 20 {
				require.NotContains(t, err.Error(), tt.token[:20], "error must not echo the token")
			}
		})
	}
}

func TestJWKSVerifierKeyAlgorithmPinned(t *testing.T) {
	clock := newFakeClock()
	jwk := keyA().jwk()
	jwk.Algorithm = string(jose.RS256)
	v := staticVerifier(t, clock, func(c *JWKSConfig) { c.JWKS = jwksJSON(t, jwk) })
	claims := k8sTokenClaims(clock.Now())

	_, err := v.Verify(context.Background(), keyA().sign(t, claims), testAudience)
	require.NoError(t, err)
	_, err = v.Verify(context.Background(), keyA().signAs(t, jose.PS256, "key-a", claims), testAudience)
	require.ErrorIs(t, err, ErrInvalidToken)
}

func TestJWKSVerifierAllowedAlgorithms(t *testing.T) {
	clock := newFakeClock()
	v := staticVerifier(t, clock, func(c *JWKSConfig) { c.AllowedAlgorithms = []string{"ES256"} })
	claims := k8sTokenClaims(clock.Now())

	_, err := v.Verify(context.Background(), keyEC().sign(t, claims), testAudience)
	require.NoError(t, err)
	_, err = v.Verify(context.Background(), keyA().sign(t, claims), testAudience)
	require.ErrorIs(t, err, ErrInvalidToken)
}

func TestNewJWKSVerifierConfig(t *testing.T) {
	jwks := jwksJSON(t, keyA().jwk())
	for _, tt := range []struct {
		name    string
		cfg     JWKSConfig
		wantErr string
	}{
		{name: "static ok", cfg: JWKSConfig{Cluster: "c", Issuer: "i", JWKS: jwks}},
		{name: "url ok", cfg: JWKSConfig{Cluster: "c", Issuer: "i", JWKSURL: "https://example.test/openid/v1/jwks"}},
		{name: "discovery ok", cfg: JWKSConfig{Cluster: "c", Issuer: "i", DiscoveryURL: "https://example.test"}},
		{name: "file ok, need not exist yet", cfg: JWKSConfig{Cluster: "c", Issuer: "i", JWKSFile: "/nonexistent/jwks.json"}},
		{name: "max leeway", cfg: JWKSConfig{Cluster: "c", Issuer: "i", JWKS: jwks, Leeway: MaxLeeway}},
		{name: "fetch timeout and max key age", cfg: JWKSConfig{Cluster: "c", Issuer: "i", JWKSURL: "https://x", FetchTimeout: time.Second, MaxKeyAge: time.Hour}},
		{name: "jwks hosts with discovery", cfg: JWKSConfig{Cluster: "c", Issuer: "i", DiscoveryURL: "https://x", JWKSHosts: []string{"keys.example.test:8443"}}},
		{name: "EdDSA may be allowed", cfg: JWKSConfig{Cluster: "c", Issuer: "i", JWKS: jwks, AllowedAlgorithms: []string{"EdDSA", "RS256"}}},
		{name: "no cluster", cfg: JWKSConfig{Issuer: "i", JWKS: jwks}, wantErr: "cluster is required"},
		{name: "no issuer", cfg: JWKSConfig{Cluster: "c", JWKS: jwks}, wantErr: "issuer is required"},
		{name: "no key source", cfg: JWKSConfig{Cluster: "c", Issuer: "i"}, wantErr: "exactly one"},
		{name: "two key sources", cfg: JWKSConfig{Cluster: "c", Issuer: "i", JWKS: jwks, JWKSURL: "https://x"}, wantErr: "exactly one"},
		{name: "alg none", cfg: JWKSConfig{Cluster: "c", Issuer: "i", JWKS: jwks, AllowedAlgorithms: []string{"none"}}, wantErr: "not allowed"},
		{name: "alg HS256", cfg: JWKSConfig{Cluster: "c", Issuer: "i", JWKS: jwks, AllowedAlgorithms: []string{"RS256", "HS256"}}, wantErr: "not allowed"},
		{name: "leeway too large", cfg: JWKSConfig{Cluster: "c", Issuer: "i", JWKS: jwks, Leeway: MaxLeeway + time.Second}, wantErr: "leeway"},
		{name: "fetch timeout too large", cfg: JWKSConfig{Cluster: "c", Issuer: "i", JWKS: jwks, FetchTimeout: MaxFetchTimeout + time.Second}, wantErr: "fetch timeout"},
		{name: "negative fetch timeout", cfg: JWKSConfig{Cluster: "c", Issuer: "i", JWKS: jwks, FetchTimeout: -time.Second}, wantErr: "fetch timeout"},
		{name: "max key age below refresh", cfg: JWKSConfig{Cluster: "c", Issuer: "i", JWKS: jwks, MaxKeyAge: time.Minute}, wantErr: "max key age"},
		{name: "jwks hosts without discovery", cfg: JWKSConfig{Cluster: "c", Issuer: "i", JWKS: jwks, JWKSHosts: []string{"x"}}, wantErr: "discovery"},
		{name: "jwks host with path", cfg: JWKSConfig{Cluster: "c", Issuer: "i", DiscoveryURL: "https://x", JWKSHosts: []string{"x/keys"}}, wantErr: "host"},
		{name: "negative leeway", cfg: JWKSConfig{Cluster: "c", Issuer: "i", JWKS: jwks, Leeway: -time.Second}, wantErr: "leeway"},
		{name: "negative refresh", cfg: JWKSConfig{Cluster: "c", Issuer: "i", JWKS: jwks, RefreshInterval: -time.Second}, wantErr: "refresh"},
		{name: "negative refetch", cfg: JWKSConfig{Cluster: "c", Issuer: "i", JWKS: jwks, MinRefetchInterval: -time.Second}, wantErr: "refetch"},
		{name: "url not http", cfg: JWKSConfig{Cluster: "c", Issuer: "i", JWKSURL: "file:///etc/jwks"}, wantErr: "http"},
		{name: "discovery url relative", cfg: JWKSConfig{Cluster: "c", Issuer: "i", DiscoveryURL: "example.test"}, wantErr: "http"},
		{name: "static jwks not json", cfg: JWKSConfig{Cluster: "c", Issuer: "i", JWKS: []byte("{")}, wantErr: "static jwks"},
		{name: "static jwks only symmetric", cfg: JWKSConfig{Cluster: "c", Issuer: "i", JWKS: []byte(`{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}`)}, wantErr: "no usable"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			v, err := NewJWKSVerifier(tt.cfg)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				require.Nil(t, v)
				return
			}
			require.NoError(t, err)
			require.NotNil(t, v)
		})
	}
}

func TestParseKeySetSkipsUnusableKeys(t *testing.T) {
	small := mustRSA(1024)
	good := keyA().jwk()
	enc := good
	enc.Use = "enc"
	doc := `{"keys":[` +
		`{"kty":"oct","kid":"sym","k":"c2VjcmV0"},` +
		string(mustMarshal(t, jose.JSONWebKey{Key: rsaKeyB(), KeyID: "private"})) + `,` +
		string(mustMarshal(t, jose.JSONWebKey{Key: small.Public(), KeyID: "small"})) + `,` +
		string(mustMarshal(t, enc)) + `,` +
		`{"kty":"RSA","kid":"broken","n":"AA","e":""},` +
		`{"kty":"weird","kid":"weird"},` +
		string(mustMarshal(t, good)) + `]}`
	keys, err := parseKeySet([]byte(doc), discardLogger())
	require.NoError(t, err)
	require.Len(t, keys, 1)
	require.Equal(t, "key-a", keys[0].KeyID)
}

func mustMarshal(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return b
}

func mustJSON(t testing.TB, v any) string { return string(mustMarshal(t, v)) }

// tamper flips a character of the payload, keeping the signature.
func tamper(tok string) string {
	parts := strings.Split(tok, ".")
	p := []byte(parts[1])
	if p[5] == 'A' {
		p[5] = 'B'
	} else {
		p[5] = 'A'
	}
	return parts[0] + "." + string(p) + "." + parts[2]
}
