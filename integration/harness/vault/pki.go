//go:build vault

package vault

import (
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.step.sm/crypto/pemutil"
)

// PKI is a PKI secrets engine mount with a root generated inside Vault.
type PKI struct {
	Mount string
	Root  *x509.Certificate
	// RootFile holds Root as PEM.
	RootFile string
}

// EnablePKI mounts a PKI engine at mount and generates its root (common
// name cn, ten years), as docs/vault.md shows.
func (s *Server) EnablePKI(t testing.TB, mount, cn string) *PKI {
	t.Helper()
	s.Write(t, "sys/mounts/"+mount, map[string]any{
		"type": "pki", "config": map[string]any{"max_lease_ttl": "87600h"},
	})
	sec := s.Write(t, mount+"/root/generate/internal", map[string]any{
		"common_name": cn, "ttl": "87600h", "key_type": "ec", "key_bits": 256,
	})
	pemStr, _ := sec.Data["certificate"].(string)
	root, err := pemutil.ParseCertificate([]byte(pemStr))
	if err != nil {
		t.Fatalf("vault: parse root of %s: %v", mount, err)
	}
	file := filepath.Join(s.dir, mount+"-root.pem")
	if err := os.WriteFile(file, []byte(pemStr+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return &PKI{Mount: mount, Root: root, RootFile: file}
}

// Policy writes an ACL policy.
func (s *Server) Policy(t testing.TB, name, hcl string) {
	t.Helper()
	s.Write(t, "sys/policies/acl/"+name, map[string]any{"policy": hcl})
}

// Token creates a token with policies, TTL ttl and explicit maximum TTL
// maxTTL (0: the mount's), renewable.
func (s *Server) Token(t testing.TB, policies []string, ttl, maxTTL time.Duration) string {
	t.Helper()
	data := map[string]any{"policies": policies, "ttl": dur(ttl), "renewable": true, "no_parent": true}
	if maxTTL > 0 {
		data["explicit_max_ttl"] = dur(maxTTL)
	}
	sec := s.Write(t, "auth/token/create", data)
	return sec.Auth.ClientToken
}

// AppRole enables AppRole auth (once) and creates role with policies and
// the token TTLs; it returns the role ID and a fresh secret ID.
func (s *Server) AppRole(t testing.TB, role string, policies []string, tokenTTL, tokenMaxTTL time.Duration) (roleID, secretID string) {
	t.Helper()
	s.enableAuth(t, "approle", "approle")
	s.Write(t, "auth/approle/role/"+role, map[string]any{
		"token_policies": policies, "token_ttl": dur(tokenTTL), "token_max_ttl": dur(tokenMaxTTL),
	})
	sec, err := s.Client.Logical().ReadWithContext(ctx(t), "auth/approle/role/"+role+"/role-id")
	if err != nil || sec == nil {
		t.Fatalf("vault: read role ID: %v", err)
	}
	roleID, _ = sec.Data["role_id"].(string)
	sec = s.Write(t, "auth/approle/role/"+role+"/secret-id", nil)
	secretID, _ = sec.Data["secret_id"].(string)
	return roleID, secretID
}

// KubernetesAuth enables Kubernetes auth pointed at an API server (host,
// its CA PEM, and a token reviewer JWT of a service account allowed to
// create TokenReviews), and a role binding the service account ns/sa with
// audience aud to policies.
func (s *Server) KubernetesAuth(t testing.TB, host string, caPEM []byte, reviewerJWT, role, ns, sa, aud string, policies []string) {
	t.Helper()
	s.enableAuth(t, "kubernetes", "kubernetes")
	s.Write(t, "auth/kubernetes/config", map[string]any{
		"kubernetes_host": host, "kubernetes_ca_cert": string(caPEM), "token_reviewer_jwt": reviewerJWT,
		"disable_local_ca_jwt": true,
	})
	s.Write(t, "auth/kubernetes/role/"+role, map[string]any{
		"bound_service_account_names": []string{sa}, "bound_service_account_namespaces": []string{ns},
		"audience": aud, "token_policies": policies, "token_ttl": "1h",
	})
}

func (s *Server) enableAuth(t testing.TB, path, typ string) {
	t.Helper()
	auths, err := s.Client.Sys().ListAuthWithContext(ctx(t))
	if err != nil {
		t.Fatalf("vault: list auth: %v", err)
	}
	if _, ok := auths[path+"/"]; ok {
		return
	}
	s.Write(t, "sys/auth/"+path, map[string]any{"type": typ})
}

func dur(d time.Duration) string { return fmt.Sprintf("%ds", int64(d.Seconds())) }
