package vault

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/vault/api"
	"go.step.sm/crypto/pemutil"

	"github.com/lanyard-id/lanyard/ca/upstream"
)

// Config configures the Vault upstream.
type Config struct {
	// Address of Vault, e.g. https://vault.example:8200. Required.
	Address string
	// CAFile holds the CA certificates that verify Vault's TLS certificate
	// (default: the system roots).
	CAFile string
	// Namespace is the Vault Enterprise namespace (X-Vault-Namespace).
	Namespace string
	// Mount is the PKI secrets engine's mount path (default "pki").
	Mount string
	// Issuer, when set, names the mount's issuer that signs
	// (<mount>/issuer/<Issuer>/sign-intermediate); empty uses the mount's
	// default issuer (<mount>/root/sign-intermediate).
	Issuer string
	// BundleFile, when set, holds the roots every intermediate must chain
	// to. Empty: the self-signed certificates of the issuer's CA chain,
	// read from Vault on first use and pinned.
	BundleFile string
	Auth       AuthConfig
	// Timeout of one Vault request (default 30s).
	Timeout time.Duration
	// RetryMin and RetryMax bound the backoff between failed logins in Run
	// (defaults 1s and 1m).
	RetryMin, RetryMax time.Duration
	Clock              func() time.Time
	Logger             *slog.Logger
}

// Upstream signs replica intermediates with Vault's PKI engine.
type Upstream struct {
	cfg    Config
	client *api.Client

	mu     sync.Mutex
	roots  []*x509.Certificate // pinned
	secret *api.Secret         // current login; nil: log in on next use

	logins, renewals, refused atomic.Int64
}

// New validates cfg and builds the Vault client. It does not contact
// Vault.
func New(cfg Config) (*Upstream, error) {
	if cfg.Address == "" {
		return nil, errors.New("vault: address is required")
	}
	if cfg.Mount == "" {
		cfg.Mount = "pki"
	}
	cfg.Mount = strings.Trim(cfg.Mount, "/")
	if cfg.Timeout == 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.RetryMin == 0 {
		cfg.RetryMin = time.Second
	}
	if cfg.RetryMax == 0 {
		cfg.RetryMax = time.Minute
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if err := cfg.Auth.fill(); err != nil {
		return nil, err
	}
	ac := api.DefaultConfig()
	if ac.Error != nil {
		return nil, fmt.Errorf("vault: client config: %w", ac.Error)
	}
	ac.Address = cfg.Address
	ac.Timeout = cfg.Timeout
	ac.MaxRetries = 0 // ca.Authority retries renewals with its own backoff
	if cfg.CAFile != "" {
		if err := ac.ConfigureTLS(&api.TLSConfig{CACert: cfg.CAFile}); err != nil {
			return nil, fmt.Errorf("vault: TLS config: %w", err)
		}
	}
	client, err := api.NewClient(ac)
	if err != nil {
		return nil, fmt.Errorf("vault: client: %w", err)
	}
	client.ClearToken() // never VAULT_TOKEN behind our back: the auth config decides
	if cfg.Namespace != "" {
		client.SetNamespace(cfg.Namespace)
	}
	u := &Upstream{cfg: cfg, client: client}
	if cfg.BundleFile != "" {
		roots, err := pemutil.ReadCertificateBundle(cfg.BundleFile)
		if err != nil {
			return nil, fmt.Errorf("vault: read bundle file: %w", err)
		}
		u.roots = roots
	}
	return u, nil
}

// Stats counts logins, token renewals and refused intermediates since New.
type Stats struct {
	Logins, TokenRenewals, Refused int64
}

// Stats returns the counters.
func (u *Upstream) Stats() Stats {
	return Stats{Logins: u.logins.Load(), TokenRenewals: u.renewals.Load(), Refused: u.refused.Load()}
}

// MintX509CA has Vault sign the replica's CSR as a CA:true, pathlen 0
// intermediate and checks what comes back before returning it.
func (u *Upstream) MintX509CA(ctx context.Context, req upstream.MintRequest) (*upstream.MintResponse, error) {
	roots, err := u.Bundle(ctx)
	if err != nil {
		return nil, err
	}
	if req.TTL <= 0 {
		return nil, fmt.Errorf("vault: intermediate TTL must be positive, got %s", req.TTL)
	}
	data := map[string]any{
		"csr":                  string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: req.CSR})),
		"common_name":          req.CommonName,
		"ttl":                  fmt.Sprintf("%ds", int64(req.TTL.Seconds())),
		"format":               "pem",
		"max_path_length":      0,
		"exclude_cn_from_sans": true,
		"use_csr_values":       false,
	}
	if req.URISAN != "" {
		data["uri_sans"] = req.URISAN
	}
	path := u.cfg.Mount + "/root/sign-intermediate"
	if u.cfg.Issuer != "" {
		path = u.cfg.Mount + "/issuer/" + u.cfg.Issuer + "/sign-intermediate"
	}
	s, err := u.write(ctx, path, data)
	if err != nil {
		return nil, fmt.Errorf("vault: sign intermediate at %s: %w", path, err)
	}
	chain, err := responseChain(s)
	if err != nil {
		return nil, fmt.Errorf("vault: sign intermediate at %s: %w", path, err)
	}
	chain = dropRoots(chain)
	if err := upstream.CheckMinted(req.CSR, req.URISAN, chain, roots, u.cfg.Clock()); err != nil {
		u.refused.Add(1)
		u.cfg.Logger.Error("refused the intermediate vault signed", "path", path, "error", err)
		return nil, fmt.Errorf("vault: %w", err)
	}
	return &upstream.MintResponse{CertChain: chain, Roots: roots}, nil
}

// Bundle returns the pinned roots, reading them from the issuer's CA chain
// on first use when no bundle file is configured.
func (u *Upstream) Bundle(ctx context.Context) ([]*x509.Certificate, error) {
	u.mu.Lock()
	roots := u.roots
	u.mu.Unlock()
	if roots != nil {
		return slices.Clone(roots), nil
	}
	issuer := u.cfg.Issuer
	if issuer == "" {
		issuer = "default"
	}
	path := u.cfg.Mount + "/issuer/" + issuer + "/json"
	s, err := u.client.Logical().ReadWithContext(ctx, path)
	if err != nil {
		return nil, fmt.Errorf("vault: read CA chain at %s: %w", path, err)
	}
	certs, err := responseChain(s)
	if err != nil {
		return nil, fmt.Errorf("vault: read CA chain at %s: %w", path, err)
	}
	for _, c := range certs {
		if isSelfSigned(c) {
			roots = append(roots, c)
		}
	}
	if len(roots) == 0 {
		return nil, fmt.Errorf("vault: the CA chain at %s holds no root; configure a bundle file", path)
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.roots == nil {
		u.roots = roots
		u.cfg.Logger.Info("pinned vault's root", "path", path, "subject", roots[0].Subject.String(), "not_after", roots[0].NotAfter)
	}
	return slices.Clone(u.roots), nil
}

// write sends an authenticated write, logging in first when needed and
// once more when Vault says the token is no longer good.
func (u *Upstream) write(ctx context.Context, path string, data map[string]any) (*api.Secret, error) {
	for attempt := 0; ; attempt++ {
		sec, err := u.ensureLogin(ctx)
		if err != nil {
			return nil, err
		}
		s, err := u.client.Logical().WriteWithContext(ctx, path, data)
		var re *api.ResponseError
		if err != nil && attempt == 0 && errors.As(err, &re) && re.StatusCode == http.StatusForbidden {
			u.cfg.Logger.Warn("vault refused the token; logging in again", "path", path)
			u.invalidate(sec)
			continue
		}
		if err == nil && s == nil {
			return nil, errors.New("empty response")
		}
		return s, err
	}
}

// ensureLogin returns the current login, logging in when there is none.
func (u *Upstream) ensureLogin(ctx context.Context) (*api.Secret, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.secret != nil {
		return u.secret, nil
	}
	s, err := u.cfg.Auth.login(ctx, u.client)
	if err != nil {
		return nil, err
	}
	u.client.SetToken(s.Auth.ClientToken)
	u.secret = s
	u.logins.Add(1)
	u.cfg.Logger.Info("logged in to vault", "method", u.cfg.Auth.Method,
		"ttl", time.Duration(s.Auth.LeaseDuration)*time.Second, "renewable", s.Auth.Renewable)
	return s, nil
}

// invalidate forgets sec, so the next use logs in again (unless another
// goroutine already replaced it).
func (u *Upstream) invalidate(sec *api.Secret) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.secret == sec {
		u.secret = nil
	}
}

func responseChain(s *api.Secret) ([]*x509.Certificate, error) {
	if s == nil || s.Data == nil {
		return nil, errors.New("empty response")
	}
	var b strings.Builder
	if c, ok := s.Data["certificate"].(string); ok {
		b.WriteString(c + "\n")
	}
	if list, ok := s.Data["ca_chain"].([]any); ok {
		for _, c := range list {
			if c, ok := c.(string); ok {
				b.WriteString(c + "\n")
			}
		}
	}
	certs, err := pemutil.ParseCertificateBundle([]byte(b.String()))
	if err != nil {
		return nil, fmt.Errorf("parse certificates: %w", err)
	}
	// Vault may repeat a certificate (the issuer in certificate and
	// ca_chain); keep the first of each.
	out := certs[:0:0]
	for _, c := range certs {
		if !slices.ContainsFunc(out, c.Equal) {
			out = append(out, c)
		}
	}
	return out, nil
}

// dropRoots keeps the chain up to but excluding self-signed roots.
func dropRoots(chain []*x509.Certificate) []*x509.Certificate {
	out := chain[:1:1]
	for _, c := range chain[1:] {
		if !isSelfSigned(c) {
			out = append(out, c)
		}
	}
	return out
}

func isSelfSigned(c *x509.Certificate) bool {
	return string(c.RawIssuer) == string(c.RawSubject) && c.CheckSignatureFrom(c) == nil
}

// Close drops the client's idle connections to Vault.
func (u *Upstream) Close() {
	if hc := u.client.CloneConfig().HttpClient; hc != nil {
		hc.CloseIdleConnections()
	}
}
