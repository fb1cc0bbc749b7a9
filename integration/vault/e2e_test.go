//go:build vault

package vault

import (
	"crypto/x509"
	"fmt"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"github.com/stretchr/testify/require"

	"github.com/lanyard-id/lanyard/integration/harness"
	vaulth "github.com/lanyard-id/lanyard/integration/harness/vault"
)

// A real `lanyard dev --upstream-config` on the test Vault: its agent
// serves a workload SVID that verifies with go-spiffe against a bundle
// holding only Vault's root.
func TestVaultEndToEnd(t *testing.T) {
	t.Parallel()
	srv := vaulth.Start(t, vaulth.Options{})
	pki := srv.EnablePKI(t, "pki", "Vault root")
	srv.Policy(t, "lanyard-ca", signPolicy)
	tokenFile := writeFile(t, "vault-token", srv.Token(t, []string{"lanyard-ca"}, time.Hour, 0))
	upstreamFile := writeFile(t, "upstream.yaml", fmt.Sprintf(`type: vault
vault:
  address: %s
  mount: pki
  auth:
    method: token
    tokenFile: %s
`, srv.Addr, tokenFile))
	dev := harness.StartDev(t, harness.Options{TrustDomain: "example.org", Args: []string{"--upstream-config=" + upstreamFile}})

	c, err := workloadapi.New(t.Context(), workloadapi.WithAddr("unix://"+dev.SocketPath()))
	require.NoError(t, err)
	defer c.Close()
	var svid *x509svid.SVID
	eventually(t, 30*time.Second, "a workload SVID", func() bool {
		svid, err = c.FetchX509SVID(t.Context())
		return err == nil
	})
	vaultOnly := x509bundle.FromX509Authorities(td, []*x509.Certificate{pki.Root})
	id, chains, err := x509svid.Verify(svid.Certificates, vaultOnly)
	require.NoError(t, err)
	require.Equal(t, spiffeid.RequireFromString("spiffe://example.org/ns/default/sa/default"), id)
	require.True(t, chains[0][len(chains[0])-1].Equal(pki.Root))

	// The bundle the CA publishes is Vault's root.
	b := dev.Bundle(t)
	require.Len(t, b.X509Authorities(), 1)
	require.True(t, b.X509Authorities()[0].Equal(pki.Root))
	require.Greater(t, dev.Metric(t, "lanyard_ca_upstream_last_success_timestamp_seconds"), 0.0)
	require.Greater(t, dev.Metric(t, "lanyard_ca_upstream_intermediate_expiry_seconds"), 3600.0)
	require.Equal(t, 1.0, dev.Metric(t, "lanyard_ca_upstream_vault_logins_total"))
}
