package harness

import (
	"bytes"
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
)

// The DEVELOPMENT-ONLY token issuer of `lanyard dev`.
const (
	DevIssuer         = "https://lanyard-dev.invalid"
	DevIssuerKeyFile  = "dev-issuer-key.pem"
	DevIssuerJWKSFile = "dev-issuer-jwks.json"
)

// Token mints a projected service-account token for ns/sa with the real
// CLI: `lanyard dev token --dir dir --namespace ns --service-account sa
// flags...` (flags such as --audience, --ttl, --pod, --node).
func Token(t testing.TB, dir, ns, sa string, flags ...string) string {
	t.Helper()
	args := append([]string{"dev", "token", "--dir", dir, "--namespace", ns, "--service-account", sa}, flags...)
	bin := Binary(t) // may build it: not within the call's timeout
	ctx, cancel := context.WithTimeout(context.Background(), CallTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("harness: lanyard %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	tok := strings.TrimSpace(stdout.String())
	if strings.Count(tok, ".") != 2 {
		t.Fatalf("harness: lanyard dev token printed %q, want a JWS", tok)
	}
	return tok
}

// Token mints a token for ns/sa from this Dev's issuer (see Token).
func (d *Dev) Token(t testing.TB, ns, sa string, flags ...string) string {
	t.Helper()
	return Token(t, d.Dir, ns, sa, flags...)
}

// AgentToken mints a token for the dev agent service account, bound to pod
// lanyard-agent-<node> on node: what AttestAgent accepts.
func (d *Dev) AgentToken(t testing.TB, node string, flags ...string) string {
	t.Helper()
	flags = append([]string{"--pod", "lanyard-agent-" + node, "--node", node}, flags...)
	return d.Token(t, AgentNamespace, AgentServiceAccount, flags...)
}

// IssuerKey returns the dev issuer's private key and key id from the
// files `lanyard dev` keeps in its directory, to craft tokens with.
func (d *Dev) IssuerKey(t testing.TB) (*rsa.PrivateKey, string) {
	t.Helper()
	return IssuerKey(t, d.Dir)
}

// IssuerKey returns the dev issuer's private key and key id from the files
// in dir (a `lanyard dev` directory, or one Token has minted from).
func IssuerKey(t testing.TB, dir string) (*rsa.PrivateKey, string) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, DevIssuerKeyFile))
	if err != nil {
		t.Fatalf("harness: %v", err)
	}
	block, _ := pem.Decode(raw)
	if block == nil {
		t.Fatalf("harness: %s: no PEM block", DevIssuerKeyFile)
	}
	var key any
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	default:
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	}
	if err != nil {
		t.Fatalf("harness: %s: %v", DevIssuerKeyFile, err)
	}
	rk, ok := key.(*rsa.PrivateKey)
	if !ok {
		t.Fatalf("harness: %s holds a %T, want RSA", DevIssuerKeyFile, key)
	}
	raw, err = os.ReadFile(filepath.Join(dir, DevIssuerJWKSFile))
	if err != nil {
		t.Fatalf("harness: %v", err)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(raw, &set); err != nil {
		t.Fatalf("harness: %s: %v", DevIssuerJWKSFile, err)
	}
	for _, k := range set.Keys {
		if pub, ok := k.Key.(*rsa.PublicKey); ok && pub.Equal(&rk.PublicKey) {
			return rk, k.KeyID
		}
	}
	t.Fatalf("harness: %s has no key matching %s", DevIssuerJWKSFile, DevIssuerKeyFile)
	return nil, ""
}

// DecodeToken splits a compact JWS without verifying it and returns its
// header and claims (numbers as json.Number, so they survive a round trip).
func DecodeToken(t testing.TB, token string) (header, claims map[string]any) {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("harness: token has %d parts, want 3", len(parts))
	}
	decode := func(s string) map[string]any {
		raw, err := base64.RawURLEncoding.DecodeString(s)
		if err != nil {
			t.Fatalf("harness: token part: %v", err)
		}
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber()
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			t.Fatalf("harness: token part: %v", err)
		}
		return m
	}
	return decode(parts[0]), decode(parts[1])
}
