package tokens

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestLoadOrCreateDevIssuer(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state", "dev")
	var logs bytes.Buffer
	d, err := LoadOrCreateDevIssuer(dir, testIssuer, WithDevLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	require.NoError(t, err)
	require.Contains(t, logs.String(), "DEVELOPMENT-ONLY")
	require.Equal(t, testIssuer, d.Issuer())
	require.Equal(t, filepath.Join(dir, DevIssuerJWKSFile), d.JWKSPath())

	for _, f := range []struct {
		path string
		mode os.FileMode
	}{
		{dir, 0o700 | os.ModeDir},
		{filepath.Join(dir, DevIssuerKeyFile), 0o600},
		{filepath.Join(dir, DevIssuerJWKSFile), 0o644},
	} {
		fi, err := os.Stat(f.path)
		require.NoError(t, err)
		require.Equal(t, f.mode, fi.Mode(), f.path)
	}

	// The kid is Kubernetes': base64url(SHA-256(PKIX DER of the public key)).
	raw, err := os.ReadFile(filepath.Join(dir, DevIssuerKeyFile))
	require.NoError(t, err)
	key, err := parseDevKey(raw)
	require.NoError(t, err)
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	require.NoError(t, err)
	sum := sha256.Sum256(der)
	require.Equal(t, base64.RawURLEncoding.EncodeToString(sum[:]), d.KeyID())

	jwksFile, err := os.ReadFile(d.JWKSPath())
	require.NoError(t, err)
	require.JSONEq(t, string(d.JWKS()), string(jwksFile))
	var set struct {
		Keys []map[string]any `json:"keys"`
	}
	require.NoError(t, json.Unmarshal(jwksFile, &set))
	require.Len(t, set.Keys, 1)
	require.Equal(t, d.KeyID(), set.Keys[0]["kid"])
	require.Equal(t, "RS256", set.Keys[0]["alg"])
	require.Equal(t, "sig", set.Keys[0]["use"])
	require.Equal(t, "RSA", set.Keys[0]["kty"])
	require.NotContains(t, set.Keys[0], "d", "no private material")

	// Loading again keeps the key.
	again, err := LoadOrCreateDevIssuer(dir, testIssuer)
	require.NoError(t, err)
	require.Equal(t, d.KeyID(), again.KeyID())
}

func TestLoadOrCreateDevIssuerConcurrent(t *testing.T) {
	dir := t.TempDir()
	kids := make([]string, 4)
	var wg sync.WaitGroup
	for i := range kids {
		wg.Go(func() {
			d, err := LoadOrCreateDevIssuer(dir, testIssuer)
			if err == nil {
				kids[i] = d.KeyID()
			}
		})
	}
	wg.Wait()
	require.NotEmpty(t, kids[0])
	for _, kid := range kids {
		require.Equal(t, kids[0], kid, "racing creators agree on one key")
	}
}

func TestLoadOrCreateDevIssuerErrors(t *testing.T) {
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	ecDER, err := x509.MarshalPKCS8PrivateKey(ec)
	require.NoError(t, err)
	for _, tt := range []struct {
		name    string
		issuer  string
		keyPEM  []byte
		wantErr string
	}{
		{name: "pkcs1 rsa key loads", issuer: testIssuer, keyPEM: pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKeyB())})},
		{name: "no issuer", wantErr: "issuer is required"},
		{name: "garbage key file", issuer: testIssuer, keyPEM: []byte("garbage"), wantErr: "no PEM block"},
		{name: "ec key", issuer: testIssuer, keyPEM: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: ecDER}), wantErr: "want RSA"},
		{name: "short rsa key", issuer: testIssuer, keyPEM: pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(mustRSA(1024))}), wantErr: "bits"},
		{name: "certificate instead of key", issuer: testIssuer, keyPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}}), wantErr: "unexpected PEM block"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if tt.keyPEM != nil {
				require.NoError(t, os.WriteFile(filepath.Join(dir, DevIssuerKeyFile), tt.keyPEM, 0o600))
			}
			d, err := LoadOrCreateDevIssuer(dir, tt.issuer)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			want, err := kubernetesKeyID(rsaKeyB().Public())
			require.NoError(t, err)
			require.Equal(t, want, d.KeyID())
		})
	}
	_, err = LoadOrCreateDevIssuer("", testIssuer)
	require.ErrorContains(t, err, "dir is required")
}

// devIssuer is one dev issuer per test binary (key generation is slow).
var devIssuer = sync.OnceValues(func() (*DevIssuer, error) {
	dir, err := os.MkdirTemp("", "lanyard-dev-issuer-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	return LoadOrCreateDevIssuer(dir, testIssuer)
})

func TestDevIssuerMintFormat(t *testing.T) {
	d, err := devIssuer()
	require.NoError(t, err)
	now := time.Unix(1_760_000_000, 0)
	tok, err := d.Mint(DevClaims{
		Namespace: "default", ServiceAccount: "web", Audiences: []string{"lanyard"},
		PodName: "web-7d9f", NodeName: "node-1", Now: now,
	})
	require.NoError(t, err)

	parts := strings.Split(tok, ".")
	require.Len(t, parts, 3)
	header, err := base64.RawURLEncoding.DecodeString(parts[0])
	require.NoError(t, err)
	require.JSONEq(t, `{"alg":"RS256","kid":"`+d.KeyID()+`"}`, string(header), "no typ, like Kubernetes")
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(string(payload), `{"aud":["lanyard"],"exp":`), "keys sorted, aud always a list: %s", payload)

	var c map[string]any
	require.NoError(t, json.Unmarshal(payload, &c))
	require.Equal(t, []string{"aud", "exp", "iat", "iss", "jti", "kubernetes.io", "nbf", "sub"}, slices.Sorted(maps.Keys(c)))
	require.EqualValues(t, now.Unix(), c["iat"])
	require.EqualValues(t, now.Unix(), c["nbf"])
	require.EqualValues(t, now.Add(time.Hour).Unix(), c["exp"])
	require.Equal(t, testIssuer, c["iss"])
	require.Equal(t, "system:serviceaccount:default:web", c["sub"])
	require.Regexp(t, regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`), c["jti"])
	k8s := c["kubernetes.io"].(map[string]any)
	require.Equal(t, []string{"namespace", "node", "pod", "serviceaccount"}, slices.Sorted(maps.Keys(k8s)))
	require.Equal(t, "default", k8s["namespace"])
	sa := k8s["serviceaccount"].(map[string]any)
	require.Equal(t, "web", sa["name"])
	require.Equal(t, devUID("serviceaccount", "default", "web"), sa["uid"])
	require.Equal(t, "web-7d9f", k8s["pod"].(map[string]any)["name"])
	require.Equal(t, "node-1", k8s["node"].(map[string]any)["name"])

	// Minimal claims: no pod or node claim.
	tok, err = d.Mint(DevClaims{Namespace: "default", ServiceAccount: "web", Audiences: []string{"a", "b"}, Now: now})
	require.NoError(t, err)
	payload, err = base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[1])
	require.NoError(t, err)
	require.Contains(t, string(payload), `"kubernetes.io":{"namespace":"default","serviceaccount":{"name":"web","uid":"`)
	require.Contains(t, string(payload), `"aud":["a","b"]`)
}

func TestDevIssuerMintVerifies(t *testing.T) {
	d, err := devIssuer()
	require.NoError(t, err)
	clock := newFakeClock()
	v, err := NewJWKSVerifier(JWKSConfig{Cluster: testCluster, Issuer: d.Issuer(), JWKS: d.JWKS(), Clock: clock.Now})
	require.NoError(t, err)
	tok, err := d.Mint(DevClaims{
		Namespace: "payments", ServiceAccount: "api", ServiceAccountUID: "6f1c3f9e-0000-4000-8000-000000000001",
		Audiences: []string{"istio-ca"}, TTL: 10 * time.Minute,
		PodName: "api-0", PodUID: "pod-uid", NodeName: "node-a", NodeUID: "node-uid", Now: clock.Now(),
	})
	require.NoError(t, err)
	sa, err := v.Verify(context.Background(), tok, "istio-ca")
	require.NoError(t, err)
	require.Equal(t, &ServiceAccount{
		Cluster: testCluster, Issuer: testIssuer, Namespace: "payments", Name: "api", UID: "6f1c3f9e-0000-4000-8000-000000000001",
		PodName: "api-0", PodUID: "pod-uid", NodeName: "node-a", NodeUID: "node-uid",
		Audiences: []string{"istio-ca"}, Expiry: time.Unix(clock.Now().Add(10*time.Minute).Unix(), 0),
		IssuedAt: time.Unix(clock.Now().Unix(), 0),
	}, sa)

	_, err = v.Verify(context.Background(), tok, testAudience)
	require.ErrorIs(t, err, ErrWrongAudience)
}

func TestDevIssuerMintErrors(t *testing.T) {
	d, err := devIssuer()
	require.NoError(t, err)
	ok := DevClaims{Namespace: "default", ServiceAccount: "web", Audiences: []string{"lanyard"}}
	for _, tt := range []struct {
		name    string
		mod     func(*DevClaims)
		wantErr string
	}{
		{name: "ok", mod: func(*DevClaims) {}},
		{name: "bad namespace", mod: func(c *DevClaims) { c.Namespace = "Default" }, wantErr: "namespace"},
		{name: "no service account", mod: func(c *DevClaims) { c.ServiceAccount = "" }, wantErr: "service account"},
		{name: "no audience", mod: func(c *DevClaims) { c.Audiences = nil }, wantErr: "no audience"},
		{name: "empty audience", mod: func(c *DevClaims) { c.Audiences = []string{""} }, wantErr: "empty audience"},
		{name: "negative ttl", mod: func(c *DevClaims) { c.TTL = -time.Second }, wantErr: "ttl"},
		{name: "pod uid without name", mod: func(c *DevClaims) { c.PodUID = "u" }, wantErr: "pod uid"},
		{name: "node uid without name", mod: func(c *DevClaims) { c.NodeUID = "u" }, wantErr: "node uid"},
		{name: "bad pod name", mod: func(c *DevClaims) { c.PodName = "a/b" }, wantErr: "pod"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := ok
			tt.mod(&c)
			tok, err := d.Mint(c)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				require.Empty(t, tok)
				return
			}
			require.NoError(t, err)
		})
	}
}

func TestDevUID(t *testing.T) {
	a := devUID("serviceaccount", "default", "web")
	require.Equal(t, a, devUID("serviceaccount", "default", "web"), "deterministic")
	require.NotEqual(t, a, devUID("serviceaccount", "other", "web"))
	require.NotEqual(t, a, devUID("pod", "default", "web"))
	require.Regexp(t, `^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`, a)
}
