package vault

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestNewValidates(t *testing.T) {
	for _, tt := range []struct {
		name    string
		cfg     Config
		wantErr string
		check   func(t *testing.T, u *Upstream)
	}{
		{name: "no address", wantErr: "address is required"},
		{name: "token defaults", cfg: Config{Address: "http://127.0.0.1:1"}, check: func(t *testing.T, u *Upstream) {
			require.Equal(t, "pki", u.cfg.Mount)
			require.Equal(t, MethodToken, u.cfg.Auth.Method)
			require.Equal(t, "VAULT_TOKEN", u.cfg.Auth.TokenEnv)
		}},
		{name: "mount trimmed", cfg: Config{Address: "http://127.0.0.1:1", Mount: "/pki-int/"}, check: func(t *testing.T, u *Upstream) {
			require.Equal(t, "pki-int", u.cfg.Mount)
		}},
		{name: "unknown method", cfg: Config{Address: "http://x", Auth: AuthConfig{Method: "ldap"}}, wantErr: `auth method "ldap"`},
		{name: "approle without role ID", cfg: Config{Address: "http://x", Auth: AuthConfig{Method: MethodAppRole, SecretIDFile: "f"}}, wantErr: "role ID"},
		{name: "approle without secret ID", cfg: Config{Address: "http://x", Auth: AuthConfig{Method: MethodAppRole, RoleID: "r"}}, wantErr: "exactly one"},
		{name: "approle with both secret IDs", cfg: Config{Address: "http://x", Auth: AuthConfig{Method: MethodAppRole, RoleID: "r", SecretIDFile: "f", SecretIDEnv: "E"}}, wantErr: "exactly one"},
		{name: "approle", cfg: Config{Address: "http://x", Auth: AuthConfig{Method: MethodAppRole, RoleID: "r", SecretIDEnv: "E"}}, check: func(t *testing.T, u *Upstream) {
			require.Equal(t, "approle", u.cfg.Auth.Mount)
		}},
		{name: "kubernetes without role", cfg: Config{Address: "http://x", Auth: AuthConfig{Method: MethodKubernetes}}, wantErr: "needs a role"},
		{name: "kubernetes defaults", cfg: Config{Address: "http://x", Auth: AuthConfig{Method: MethodKubernetes, Role: "r"}}, check: func(t *testing.T, u *Upstream) {
			require.Equal(t, "kubernetes", u.cfg.Auth.Mount)
			require.Equal(t, DefaultKubernetesTokenFile, u.cfg.Auth.ServiceAccountTokenFile)
		}},
		{name: "missing CA file", cfg: Config{Address: "https://x", CAFile: "/nonexistent/ca.pem"}, wantErr: "TLS config"},
		{name: "missing bundle file", cfg: Config{Address: "https://x", BundleFile: "/nonexistent/bundle.pem"}, wantErr: "bundle file"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			u, err := New(tt.cfg)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				require.Nil(t, u)
				return
			}
			require.NoError(t, err)
			tt.check(t, u)
		})
	}
}

func TestReadToken(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("LANYARD_TEST_VAULT_TOKEN", " s.env \n")
	c := AuthConfig{TokenEnv: "LANYARD_TEST_VAULT_TOKEN"}
	tok, err := c.readToken()
	require.NoError(t, err)
	require.Equal(t, "s.env", tok)

	c = AuthConfig{TokenFile: dir + "/missing"}
	_, err = c.readToken()
	require.ErrorContains(t, err, "read token file")

	t.Setenv("LANYARD_TEST_VAULT_TOKEN", "")
	c = AuthConfig{TokenEnv: "LANYARD_TEST_VAULT_TOKEN"}
	_, err = c.readToken()
	require.ErrorContains(t, err, "holds no token")
}
