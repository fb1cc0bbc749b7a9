//go:build vault

package vault

import (
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	vaultup "github.com/lanyard-id/lanyard/ca/upstream/vault"
	"github.com/lanyard-id/lanyard/integration/harness/kube"
	vaulth "github.com/lanyard-id/lanyard/integration/harness/vault"
)

// Kubernetes auth with a real kube-apiserver: Vault reviews the CA's
// projected service-account token, which the CA re-reads on every login.
func TestVaultKubernetesAuth(t *testing.T) {
	t.Parallel()
	k := kube.StartKube(t, kube.Options{Name: "vault-kube"})
	srv := vaulth.Start(t, vaulth.Options{})
	pki := srv.EnablePKI(t, "pki", "Vault root")
	srv.Policy(t, "lanyard-ca", signPolicy)

	// Vault's token reviewer: a service account bound to
	// system:auth-delegator, as docs/vault.md shows.
	k.Namespace(t, "vault")
	k.ServiceAccount(t, "vault", "vault-auth")
	_, err := k.Client.RbacV1().ClusterRoleBindings().Create(t.Context(), &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "vault-auth-delegator"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "system:auth-delegator"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: "vault", Name: "vault-auth"}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	reviewer := k.TokenRequest(t, "vault", "vault-auth", nil, nil, time.Hour)
	caPEM, err := os.ReadFile(k.CAFile)
	require.NoError(t, err)
	srv.KubernetesAuth(t, k.URL, caPEM, reviewer, "lanyard-ca", "lanyard", "lanyard-ca", "vault", []string{"lanyard-ca"})

	// The CA's projected token (audience vault).
	k.Namespace(t, "lanyard")
	k.ServiceAccount(t, "lanyard", "lanyard-ca")
	tokenFile := writeFile(t, "vault-token", k.TokenRequest(t, "lanyard", "lanyard-ca", []string{"vault"}, nil, time.Hour))
	up := newUpstream(t, srv, vaultup.Config{Auth: vaultup.AuthConfig{
		Method: vaultup.MethodKubernetes, Role: "lanyard-ca", ServiceAccountTokenFile: tokenFile,
	}})
	r := startReplica(t, up, time.Hour)
	r.issue(t, pki.Root)
	require.Equal(t, int64(1), up.Stats().Logins)

	// The kubelet rotates the projected token; Vault's tokens are revoked.
	// The next login reads the file again: a broken token fails...
	require.NoError(t, os.WriteFile(tokenFile, []byte("not-a-jwt"), 0o600))
	srv.Write(t, "sys/leases/revoke-prefix/auth/kubernetes/login", nil)
	_, err = up.MintX509CA(t.Context(), mintRequest(t))
	require.ErrorContains(t, err, "login")
	// ...and the rotated one works.
	require.NoError(t, os.WriteFile(tokenFile, []byte(k.TokenRequest(t, "lanyard", "lanyard-ca", []string{"vault"}, nil, time.Hour)), 0o600))
	eventually(t, 30*time.Second, "a login with the rotated token", func() bool {
		_, err := up.MintX509CA(t.Context(), mintRequest(t))
		return err == nil
	})
	require.GreaterOrEqual(t, up.Stats().Logins, int64(2))
}
