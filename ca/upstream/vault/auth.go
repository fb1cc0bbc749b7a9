package vault

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/hashicorp/vault/api"
	"github.com/hashicorp/vault/api/auth/approle"
	"github.com/hashicorp/vault/api/auth/kubernetes"
)

// Auth methods.
const (
	MethodToken      = "token"
	MethodAppRole    = "approle"
	MethodKubernetes = "kubernetes"
)

// DefaultKubernetesTokenFile is the service-account token the CA's pod
// has mounted by default.
const DefaultKubernetesTokenFile = "/var/run/secrets/kubernetes.io/serviceaccount/token"

// AuthConfig says how the CA logs in to Vault.
type AuthConfig struct {
	// Method is "token" (default), "approle" or "kubernetes".
	Method string
	// Token: TokenFile, else the environment variable TokenEnv (default
	// VAULT_TOKEN). Both are re-read on every login.
	TokenFile string
	TokenEnv  string
	// AppRole: RoleID, and the secret ID from SecretIDFile or the
	// environment variable SecretIDEnv. Mount defaults to "approle".
	RoleID       string
	SecretIDFile string
	SecretIDEnv  string
	// Kubernetes: Role, and the service-account token in
	// ServiceAccountTokenFile (default DefaultKubernetesTokenFile), re-read on
	// every login. Mount defaults to "kubernetes".
	Role                    string
	ServiceAccountTokenFile string
	// Mount is the auth method's mount path (approle and kubernetes).
	Mount string
}

func (c *AuthConfig) fill() error {
	switch c.Method {
	case "", MethodToken:
		c.Method = MethodToken
		if c.TokenFile == "" && c.TokenEnv == "" {
			c.TokenEnv = api.EnvVaultToken
		}
	case MethodAppRole:
		if c.RoleID == "" {
			return errors.New("vault: approle auth needs a role ID")
		}
		if (c.SecretIDFile == "") == (c.SecretIDEnv == "") {
			return errors.New("vault: approle auth needs exactly one of a secret ID file or environment variable")
		}
		if c.Mount == "" {
			c.Mount = "approle"
		}
	case MethodKubernetes:
		if c.Role == "" {
			return errors.New("vault: kubernetes auth needs a role")
		}
		if c.ServiceAccountTokenFile == "" {
			c.ServiceAccountTokenFile = DefaultKubernetesTokenFile
		}
		if c.Mount == "" {
			c.Mount = "kubernetes"
		}
	default:
		return fmt.Errorf("vault: auth method %q: want token, approle or kubernetes", c.Method)
	}
	return nil
}

// login gets a fresh token. For the token method the secret is a lookup of
// the token itself, so the LifetimeWatcher can renew it when renewable.
func (c *AuthConfig) login(ctx context.Context, client *api.Client) (*api.Secret, error) {
	switch c.Method {
	case MethodToken:
		tok, err := c.readToken()
		if err != nil {
			return nil, err
		}
		client.SetToken(tok)
		s, err := client.Auth().Token().LookupSelfWithContext(ctx)
		if err != nil {
			return nil, fmt.Errorf("vault: look up token: %w", err)
		}
		return tokenSecret(s, tok)
	case MethodAppRole:
		sid := &approle.SecretID{FromFile: c.SecretIDFile, FromEnv: c.SecretIDEnv}
		m, err := approle.NewAppRoleAuth(c.RoleID, sid, approle.WithMountPath(c.Mount))
		if err != nil {
			return nil, fmt.Errorf("vault: approle auth: %w", err)
		}
		return loginWith(ctx, client, m)
	default: // MethodKubernetes
		// A new method per login re-reads the projected token, which the
		// kubelet rotates.
		m, err := kubernetes.NewKubernetesAuth(c.Role,
			kubernetes.WithServiceAccountTokenPath(c.ServiceAccountTokenFile), kubernetes.WithMountPath(c.Mount))
		if err != nil {
			return nil, fmt.Errorf("vault: kubernetes auth: %w", err)
		}
		return loginWith(ctx, client, m)
	}
}

func loginWith(ctx context.Context, client *api.Client, m api.AuthMethod) (*api.Secret, error) {
	s, err := client.Auth().Login(ctx, m)
	if err != nil {
		return nil, fmt.Errorf("vault: login: %w", err)
	}
	if s == nil || s.Auth == nil || s.Auth.ClientToken == "" {
		return nil, errors.New("vault: login returned no token")
	}
	return s, nil
}

func (c *AuthConfig) readToken() (string, error) {
	if c.TokenFile != "" {
		b, err := os.ReadFile(c.TokenFile)
		if err != nil {
			return "", fmt.Errorf("vault: read token file: %w", err)
		}
		if t := strings.TrimSpace(string(b)); t != "" {
			return t, nil
		}
		return "", fmt.Errorf("vault: token file %s is empty", c.TokenFile)
	}
	if t := strings.TrimSpace(os.Getenv(c.TokenEnv)); t != "" {
		return t, nil
	}
	return "", fmt.Errorf("vault: environment variable %s holds no token", c.TokenEnv)
}

// tokenSecret turns a token self-lookup into the Auth secret the
// LifetimeWatcher renews.
func tokenSecret(s *api.Secret, tok string) (*api.Secret, error) {
	if s == nil || s.Data == nil {
		return nil, errors.New("vault: token lookup returned nothing")
	}
	renewable, _ := s.TokenIsRenewable()
	ttl, err := s.TokenTTL()
	if err != nil {
		return nil, fmt.Errorf("vault: token TTL: %w", err)
	}
	return &api.Secret{Auth: &api.SecretAuth{
		ClientToken: tok, Renewable: renewable, LeaseDuration: int(ttl.Seconds()),
	}}, nil
}
