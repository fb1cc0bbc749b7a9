//go:build vault

package vault

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lanyard-id/lanyard/ca/upstream"
	vaultup "github.com/lanyard-id/lanyard/ca/upstream/vault"
	"github.com/lanyard-id/lanyard/integration/harness"
	vaulth "github.com/lanyard-id/lanyard/integration/harness/vault"
)

// newUpstream is the Vault upstream on srv with cfg's auth, mount "pki".
func newUpstream(t *testing.T, srv *vaulth.Server, cfg vaultup.Config) *vaultup.Upstream {
	t.Helper()
	cfg.Address = srv.Addr
	cfg.RetryMin, cfg.RetryMax = 100*time.Millisecond, 2*time.Second
	cfg.Logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})).With("component", "vault")
	up, err := vaultup.New(cfg)
	require.NoError(t, err)
	t.Cleanup(up.Close)
	return up
}

// tokenUpstream is a Vault upstream logged in with a token of signPolicy
// read from a file.
func tokenUpstream(t *testing.T, srv *vaulth.Server, cfg vaultup.Config) *vaultup.Upstream {
	t.Helper()
	srv.Policy(t, "lanyard-ca", signPolicy)
	tok := srv.Token(t, []string{"lanyard-ca"}, time.Hour, 0)
	cfg.Auth = vaultup.AuthConfig{Method: vaultup.MethodToken, TokenFile: writeFile(t, "token", tok+"\n")}
	return newUpstream(t, srv, cfg)
}

func TestVaultFirstMintAndBundle(t *testing.T) {
	t.Parallel()
	srv := vaulth.Start(t, vaulth.Options{})
	pki := srv.EnablePKI(t, "pki", "Vault root")
	up := tokenUpstream(t, srv, vaultup.Config{})
	r := startReplica(t, up, time.Hour)

	b := r.auth.Bundle()
	require.Len(t, b.Roots, 1)
	require.True(t, b.Roots[0].Equal(pki.Root), "the bundle is Vault's root")

	x := r.current(t)
	c := x.Certificate
	require.NoError(t, c.CheckSignatureFrom(pki.Root), "signed by Vault's root")
	require.True(t, c.IsCA)
	require.Zero(t, c.MaxPathLen)
	require.True(t, c.MaxPathLenZero)
	require.Len(t, c.URIs, 1)
	require.Equal(t, "spiffe://example.org", c.URIs[0].String())
	require.Empty(t, c.DNSNames, "no common name copied into the SANs")
	require.InDelta(t, time.Hour.Seconds(), time.Until(c.NotAfter).Seconds(), 60)
	require.Len(t, x.Chain, 1, "the root is not part of the chain")
	r.issue(t, pki.Root)
	require.Equal(t, int64(1), up.Stats().Logins)
}

func TestVaultRenewsAtHalfLife(t *testing.T) {
	t.Parallel()
	srv := vaulth.Start(t, vaulth.Options{})
	pki := srv.EnablePKI(t, "pki", "Vault root")
	r := startReplica(t, tokenUpstream(t, srv, vaultup.Config{}), time.Minute)
	first := r.current(t).Certificate
	half := first.NotBefore.Add(first.NotAfter.Sub(first.NotBefore) / 2)

	eventually(t, 90*time.Second, "a renewal", func() bool { return r.rotationCount() >= 2 })
	second := r.current(t).Certificate
	require.False(t, second.Equal(first))
	require.False(t, second.NotBefore.Add(30*time.Second).Before(half.Add(-time.Second)),
		"renewed at half-life (%s), not before: new NotBefore %s (Vault backdates 30s)", half, second.NotBefore)
	require.NoError(t, second.CheckSignatureFrom(pki.Root))
	r.issue(t, pki.Root)
	require.Zero(t, r.auth.UpstreamStats().Failures)
}

// AppRole login; the token (TTL 3s) is renewed by the LifetimeWatcher,
// then revoked: the refused renewal leads to a new login.
func TestVaultAppRoleTokenRenewalAndRelogin(t *testing.T) {
	t.Parallel()
	srv := vaulth.Start(t, vaulth.Options{})
	pki := srv.EnablePKI(t, "pki", "Vault root")
	srv.Policy(t, "lanyard-ca", signPolicy)
	roleID, secretID := srv.AppRole(t, "lanyard-ca", []string{"lanyard-ca"}, 3*time.Second, time.Hour)
	up := newUpstream(t, srv, vaultup.Config{Auth: vaultup.AuthConfig{
		Method: vaultup.MethodAppRole, RoleID: roleID, SecretIDFile: writeFile(t, "secret-id", secretID),
	}})
	r := startReplica(t, up, time.Hour)
	r.issue(t, pki.Root)

	eventually(t, 30*time.Second, "two token renewals", func() bool { return up.Stats().TokenRenewals >= 2 })
	require.Equal(t, int64(1), up.Stats().Logins, "renewed, not logged in again")

	// Revoke every AppRole token: the next renewal is refused.
	srv.Write(t, "sys/leases/revoke-prefix/auth/approle/login", nil)
	eventually(t, 30*time.Second, "a new login", func() bool { return up.Stats().Logins >= 2 })

	// The new token signs.
	resp := mintOnce(t, up)
	require.NoError(t, resp.CertChain[0].CheckSignatureFrom(pki.Root))
}

// An AppRole secret ID from an environment variable.
func TestVaultAppRoleSecretIDFromEnv(t *testing.T) {
	srv := vaulth.Start(t, vaulth.Options{})
	srv.EnablePKI(t, "pki", "Vault root")
	srv.Policy(t, "lanyard-ca", signPolicy)
	roleID, secretID := srv.AppRole(t, "lanyard-ca", []string{"lanyard-ca"}, time.Hour, time.Hour)
	t.Setenv("LANYARD_TEST_SECRET_ID", secretID)
	up := newUpstream(t, srv, vaultup.Config{Auth: vaultup.AuthConfig{
		Method: vaultup.MethodAppRole, RoleID: roleID, SecretIDEnv: "LANYARD_TEST_SECRET_ID",
	}})
	mintOnce(t, up)
	require.Equal(t, int64(1), up.Stats().Logins)
}

// mintOnce mints an intermediate for a fresh key directly on up.
func mintOnce(t *testing.T, up upstream.Authority) *upstream.MintResponse {
	t.Helper()
	resp, err := up.MintX509CA(context.Background(), mintRequest(t))
	require.NoError(t, err)
	return resp
}

func mintRequest(t *testing.T) upstream.MintRequest {
	t.Helper()
	return upstream.MintRequest{CSR: newIntermediateCSR(t), TTL: time.Hour, URISAN: td.IDString(), CommonName: "Lanyard intermediate test"}
}

// Vault sealed: issuance carries on with the intermediate, renewals fail
// and resume after unseal.
func TestVaultSealed(t *testing.T) {
	t.Parallel()
	srv := vaulth.Start(t, vaulth.Options{})
	pki := srv.EnablePKI(t, "pki", "Vault root")
	r := startReplica(t, tokenUpstream(t, srv, vaultup.Config{}), time.Minute)
	first := r.current(t)

	srv.Seal(t)
	eventually(t, 90*time.Second, "a failed renewal", func() bool { return r.auth.UpstreamStats().Failures >= 2 })
	require.Same(t, first, r.current(t), "the intermediate stays in service")
	r.issue(t, pki.Root)

	srv.Unseal(t)
	eventually(t, 60*time.Second, "a renewal after unseal", func() bool { return r.rotationCount() >= 2 })
	require.NotSame(t, first, r.current(t))
	r.issue(t, pki.Root)
}

// Vault stopped: a file-storage server (dev mode keeps no state) is
// stopped mid-run and restarted on the same port and data.
func TestVaultStoppedAndRestarted(t *testing.T) {
	t.Parallel()
	srv := vaulth.Start(t, vaulth.Options{Persistent: true})
	pki := srv.EnablePKI(t, "pki", "Vault root")
	r := startReplica(t, tokenUpstream(t, srv, vaultup.Config{}), time.Minute)
	first := r.current(t)

	srv.Stop(t)
	eventually(t, 90*time.Second, "a failed renewal", func() bool { return r.auth.UpstreamStats().Failures >= 2 })
	require.Same(t, first, r.current(t), "the intermediate stays in service")
	r.issue(t, pki.Root)

	srv.Restart(t)
	eventually(t, 60*time.Second, "a renewal after restart", func() bool { return r.rotationCount() >= 2 })
	require.NotSame(t, first, r.current(t))
	require.NoError(t, r.current(t).Certificate.CheckSignatureFrom(pki.Root))
	r.issue(t, pki.Root)
}

// A second PKI mount whose root is not ours is swapped in at "pki": what it
// signs is refused and the old intermediate stays in service.
func TestVaultForeignRootRefused(t *testing.T) {
	t.Parallel()
	srv := vaulth.Start(t, vaulth.Options{})
	pki := srv.EnablePKI(t, "pki", "Vault root")
	srv.EnablePKI(t, "pki2", "Not our root")
	up := tokenUpstream(t, srv, vaultup.Config{})
	r := startReplica(t, up, time.Minute)
	first := r.current(t)

	remount(t, srv, "pki", "pki-old")
	remount(t, srv, "pki2", "pki")
	eventually(t, 90*time.Second, "a refused intermediate", func() bool { return up.Stats().Refused >= 1 })
	require.Same(t, first, r.current(t), "the old intermediate stays in service")
	require.True(t, r.auth.Bundle().Roots[0].Equal(pki.Root), "the pinned root is kept")
	require.GreaterOrEqual(t, r.auth.UpstreamStats().Failures, int64(1))
	r.issue(t, pki.Root)

	// Also refused when the bundle file names our root from the start.
	up2 := newUpstream(t, srv, vaultup.Config{BundleFile: pki.RootFile, Auth: vaultup.AuthConfig{
		Method: vaultup.MethodToken, TokenFile: writeFile(t, "token", srv.RootToken),
	}})
	_, err := up2.MintX509CA(context.Background(), mintRequest(t))
	require.ErrorIs(t, err, upstream.ErrRefused)
	require.ErrorContains(t, err, "does not chain to the configured root")
}

func remount(t *testing.T, srv *vaulth.Server, from, to string) {
	t.Helper()
	sec := srv.Write(t, "sys/remount", map[string]any{"from": from, "to": to})
	if sec == nil || sec.Data["migration_id"] == nil {
		return
	}
	id, _ := sec.Data["migration_id"].(string)
	eventually(t, 30*time.Second, "remount "+from+" to "+to, func() bool {
		s, err := srv.Client.Logical().Read("sys/remount/status/" + id)
		if err != nil || s == nil {
			return false
		}
		info, _ := s.Data["migration_info"].(map[string]any)
		return info["status"] == "success"
	})
}

func newIntermediateCSR(t *testing.T) []byte {
	t.Helper()
	return harness.NewCSR(t, harness.CSROptions{Key: harness.P256}).DER
}
