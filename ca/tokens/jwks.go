package tokens

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

const (
	// DefaultLeeway is the clock skew allowed on exp, nbf and iat.
	DefaultLeeway = 60 * time.Second
	// MaxLeeway is the largest leeway a JWKSConfig may ask for: enough for
	// a clock a few minutes off, small beside a projected token's life
	// (at least 10 minutes, usually an hour).
	MaxLeeway = 5 * time.Minute
	// DefaultRefreshInterval is how old a key set may get before it is
	// fetched again.
	DefaultRefreshInterval = 5 * time.Minute
	// DefaultMinRefetchInterval is the least time between two fetches,
	// and so how long a failed fetch is remembered (the negative cache).
	DefaultMinRefetchInterval = 10 * time.Second
	// DefaultFetchTimeout bounds one fetch (discovery plus key set).
	DefaultFetchTimeout = 5 * time.Second
	// MaxFetchTimeout is the largest FetchTimeout a JWKSConfig may ask for.
	MaxFetchTimeout = time.Minute
	// DefaultMaxKeyAge is how long keys are used after the last successful
	// fetch while refreshes fail.
	DefaultMaxKeyAge = 24 * time.Hour
)

// defaultAlgorithms are the asymmetric JWS algorithms Kubernetes may sign
// service-account tokens with.
var defaultAlgorithms = []string{
	"RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512",
}

// allowedAlgorithms are all the algorithms a JWKSConfig may name: never
// "none" and never an HMAC algorithm.
var allowedAlgorithms = map[string]jose.SignatureAlgorithm{
	"RS256": jose.RS256, "RS384": jose.RS384, "RS512": jose.RS512,
	"ES256": jose.ES256, "ES384": jose.ES384, "ES512": jose.ES512,
	"PS256": jose.PS256, "PS384": jose.PS384, "PS512": jose.PS512,
	"EdDSA": jose.EdDSA,
}

// JWKSConfig configures a JWKSVerifier. Exactly one of DiscoveryURL,
// JWKSURL, JWKSFile and JWKS names where the issuer's keys come from.
type JWKSConfig struct {
	// Cluster names the cluster; it is copied into every ServiceAccount.
	// Required.
	Cluster string
	// Issuer is the exact iss claim tokens must carry (the API server's
	// --service-account-issuer). Required.
	Issuer string
	// DiscoveryURL is where the OIDC discovery document is, usually the
	// issuer: "/.well-known/openid-configuration" is appended unless the
	// URL already ends with it. The document's issuer must equal Issuer;
	// its jwks_uri must be https (or http when DiscoveryURL is http).
	DiscoveryURL string
	// JWKSURL is the key set's URL (the API server's /openid/v1/jwks).
	JWKSURL string
	// JWKSFile is a local key set file, read again on every refresh.
	JWKSFile string
	// JWKS is a static key set document.
	JWKS []byte
	// AllowedAlgorithms are the JWS algorithms accepted. Default: RS256,
	// RS384, RS512, ES256, ES384, ES512, PS256, PS384, PS512. EdDSA may be
	// added; none and HS* are refused.
	AllowedAlgorithms []string
	// Leeway is the clock skew allowed on exp, nbf and iat. Default 60s,
	// at most 5m.
	Leeway time.Duration
	// RefreshInterval is how old the cached key set may get before a
	// verification fetches it again. Default 5m.
	RefreshInterval time.Duration
	// MinRefetchInterval is the least time between two fetches, however
	// many tokens name an unknown kid. It is also the negative cache:
	// after a failed fetch, callers are answered at once (Unavailable, or
	// from the keys still held) and the next fetch starts, in the
	// background, this long after. Default 10s.
	MinRefetchInterval time.Duration
	// FetchTimeout bounds one fetch (discovery document plus key set).
	// Callers wait for a fetch only when no keys can answer them and the
	// endpoint is not known to be failing. Default 5s, at most 1m.
	FetchTimeout time.Duration
	// MaxKeyAge is how long keys stay in use after the last successful
	// fetch while refreshes fail; past it, every token of the cluster is
	// answered with ErrKeysTooOld (Unavailable) until a fetch succeeds.
	// At least RefreshInterval. Default 24h.
	MaxKeyAge time.Duration
	// JWKSHosts are hosts (host or host:port, as in the URL) besides the
	// discovery document's own that its jwks_uri may name. Default none:
	// a jwks_uri on another host is refused.
	JWKSHosts []string
	// HTTPClient fetches discovery documents and key sets. It is copied;
	// the copy follows no redirect to another host. Default: a plain
	// client. Every fetch is bounded by FetchTimeout and to 1 MiB.
	HTTPClient *http.Client
	// Clock returns the current time. Default time.Now.
	Clock func() time.Time
	// Logger receives key set events. Default: discard.
	Logger *slog.Logger
}

// JWKSVerifier verifies Kubernetes projected service-account tokens offline
// against the issuer's public keys. It is safe for concurrent use.
type JWKSVerifier struct {
	cluster string
	issuer  string
	algs    []jose.SignatureAlgorithm
	leeway  time.Duration
	clock   func() time.Time
	log     *slog.Logger
	keys    *keySet
}

var _ Verifier = (*JWKSVerifier)(nil)

// NewJWKSVerifier fills the defaults of cfg, validates it and returns a
// verifier. Remote key sets are fetched on first use (or by Refresh); a
// static JWKS is parsed here.
func NewJWKSVerifier(cfg JWKSConfig) (*JWKSVerifier, error) {
	if cfg.Cluster == "" {
		return nil, errors.New("jwks verifier: cluster is required")
	}
	if cfg.Issuer == "" {
		return nil, errors.New("jwks verifier: issuer is required")
	}
	algs, err := signatureAlgorithms(cfg.AllowedAlgorithms)
	if err != nil {
		return nil, fmt.Errorf("jwks verifier: %w", err)
	}
	switch {
	case cfg.Leeway < 0 || cfg.Leeway > MaxLeeway:
		return nil, fmt.Errorf("jwks verifier: leeway %s not in [0, %s]", cfg.Leeway, MaxLeeway)
	case cfg.Leeway == 0:
		cfg.Leeway = DefaultLeeway
	}
	switch {
	case cfg.RefreshInterval < 0:
		return nil, fmt.Errorf("jwks verifier: negative refresh interval %s", cfg.RefreshInterval)
	case cfg.RefreshInterval == 0:
		cfg.RefreshInterval = DefaultRefreshInterval
	}
	switch {
	case cfg.MinRefetchInterval < 0:
		return nil, fmt.Errorf("jwks verifier: negative min refetch interval %s", cfg.MinRefetchInterval)
	case cfg.MinRefetchInterval == 0:
		cfg.MinRefetchInterval = DefaultMinRefetchInterval
	}
	switch {
	case cfg.FetchTimeout < 0 || cfg.FetchTimeout > MaxFetchTimeout:
		return nil, fmt.Errorf("jwks verifier: fetch timeout %s not in [0, %s]", cfg.FetchTimeout, MaxFetchTimeout)
	case cfg.FetchTimeout == 0:
		cfg.FetchTimeout = DefaultFetchTimeout
	}
	switch {
	case cfg.MaxKeyAge == 0:
		cfg.MaxKeyAge = max(DefaultMaxKeyAge, cfg.RefreshInterval)
	case cfg.MaxKeyAge < cfg.RefreshInterval:
		return nil, fmt.Errorf("jwks verifier: max key age %s shorter than the refresh interval %s", cfg.MaxKeyAge, cfg.RefreshInterval)
	}
	if len(cfg.JWKSHosts) > 0 && cfg.DiscoveryURL == "" {
		return nil, errors.New("jwks verifier: jwks hosts apply only with a discovery url")
	}
	for _, h := range cfg.JWKSHosts {
		if h == "" || strings.ContainsAny(h, "/?#@ ") {
			return nil, fmt.Errorf("jwks verifier: jwks host %q: want host or host:port", h)
		}
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	log := cfg.Logger.With("cluster", cfg.Cluster)
	source, err := keySourceFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("jwks verifier: %w", err)
	}
	v := &JWKSVerifier{
		cluster: cfg.Cluster,
		issuer:  cfg.Issuer,
		algs:    algs,
		leeway:  cfg.Leeway,
		clock:   cfg.Clock,
		log:     log,
		keys: &keySet{
			source:       source,
			clock:        cfg.Clock,
			log:          log,
			refresh:      cfg.RefreshInterval,
			minRefetch:   cfg.MinRefetchInterval,
			maxAge:       cfg.MaxKeyAge,
			fetchTimeout: cfg.FetchTimeout,
		},
	}
	if len(cfg.JWKS) > 0 {
		if err := v.keys.refreshNow(context.Background()); err != nil {
			return nil, fmt.Errorf("jwks verifier: static jwks: %w", err)
		}
	}
	return v, nil
}

func signatureAlgorithms(names []string) ([]jose.SignatureAlgorithm, error) {
	if len(names) == 0 {
		names = defaultAlgorithms
	}
	algs := make([]jose.SignatureAlgorithm, 0, len(names))
	for _, n := range names {
		alg, ok := allowedAlgorithms[n]
		if !ok {
			return nil, fmt.Errorf("algorithm %q not allowed", n)
		}
		algs = append(algs, alg)
	}
	return algs, nil
}

func keySourceFor(cfg JWKSConfig) (keySource, error) {
	n := 0
	for _, set := range []bool{cfg.DiscoveryURL != "", cfg.JWKSURL != "", cfg.JWKSFile != "", len(cfg.JWKS) > 0} {
		if set {
			n++
		}
	}
	if n != 1 {
		return nil, errors.New("exactly one of discovery url, jwks url, jwks file and jwks is required")
	}
	client := fetchClient(cfg.HTTPClient)
	switch {
	case cfg.DiscoveryURL != "":
		u := discoveryDocumentURL(cfg.DiscoveryURL)
		if err := checkFetchURL("discovery url", u); err != nil {
			return nil, err
		}
		return discoverySource(client, u, cfg.Issuer, cfg.JWKSHosts), nil
	case cfg.JWKSURL != "":
		if err := checkFetchURL("jwks url", cfg.JWKSURL); err != nil {
			return nil, err
		}
		return httpSource(client, cfg.JWKSURL), nil
	case cfg.JWKSFile != "":
		return fileSource(cfg.JWKSFile), nil
	default:
		return staticSource(cfg.JWKS), nil
	}
}

// Refresh fetches the key set now, ignoring the refetch rate limit. Use it
// at startup to fail fast or to warm the cache. Errors wrap ErrUnavailable;
// keys loaded before stay in use.
func (v *JWKSVerifier) Refresh(ctx context.Context) error {
	return v.keys.refreshNow(ctx)
}

// KeysFetchedAt is when the key set was last fetched successfully (zero
// before the first fetch).
func (v *JWKSVerifier) KeysFetchedAt() time.Time {
	v.keys.mu.Lock()
	defer v.keys.mu.Unlock()
	return v.keys.fetchedAt
}

// Verify checks the token's signature, issuer, expiry, audience and
// Kubernetes claims. Errors wrap ErrInvalidToken, ErrExpired,
// ErrWrongAudience or ErrUnavailable with a short reason that never
// contains the token.
func (v *JWKSVerifier) Verify(ctx context.Context, token, audience string) (*ServiceAccount, error) {
	sa, err := v.verify(ctx, token, audience)
	if err != nil {
		v.log.Debug("token rejected", "reason", err.Error())
		return nil, err
	}
	return sa, nil
}

func (v *JWKSVerifier) verify(ctx context.Context, token, audience string) (*ServiceAccount, error) {
	if err := checkRequest(token, audience); err != nil {
		return nil, err
	}
	tok, err := jwt.ParseSigned(token, v.algs)
	if err != nil {
		return nil, fmt.Errorf("%w: malformed token or algorithm not allowed", ErrInvalidToken)
	}
	if len(tok.Headers) != 1 {
		return nil, fmt.Errorf("%w: want exactly one signature", ErrInvalidToken)
	}
	hdr := tok.Headers[0]
	keys, err := v.keys.keysFor(ctx, hdr.KeyID)
	if err != nil {
		return nil, err
	}
	var (
		std  jwt.Claims
		priv privateClaims
	)
	if err := verifyWithKeys(tok, hdr.Algorithm, keys, &std, &priv); err != nil {
		return nil, err
	}
	if err := v.checkClaims(&std, audience); err != nil {
		return nil, err
	}
	id, err := identityFromClaims(std.Subject, &priv)
	if err != nil {
		return nil, err
	}
	sa := id.serviceAccount(v.cluster, std.Issuer, std.Audience, std.Expiry.Time())
	if std.IssuedAt != nil {
		sa.IssuedAt = std.IssuedAt.Time()
	}
	return sa, nil
}

// verifyWithKeys verifies the signature with the first key that fits and
// decodes the claims. Errors wrap ErrInvalidToken.
func verifyWithKeys(tok *jwt.JSONWebToken, alg string, keys []jose.JSONWebKey, dest ...any) error {
	for _, k := range keys {
		if k.Algorithm != "" && k.Algorithm != alg {
			continue
		}
		err := tok.Claims(k.Key, dest...)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, jose.ErrCryptoFailure):
			continue
		default:
			return fmt.Errorf("%w: malformed claims", ErrInvalidToken)
		}
	}
	return fmt.Errorf("%w: signature not valid for any key", ErrInvalidToken)
}

// checkClaims checks iss, exp, nbf, iat and aud.
func (v *JWKSVerifier) checkClaims(c *jwt.Claims, audience string) error {
	if c.Issuer != v.issuer {
		return fmt.Errorf("%w: wrong issuer", ErrInvalidToken)
	}
	if c.Expiry == nil {
		return fmt.Errorf("%w: no exp claim", ErrInvalidToken)
	}
	now := v.clock()
	if now.After(c.Expiry.Time().Add(v.leeway)) {
		return fmt.Errorf("%w: token expired", ErrExpired)
	}
	if c.NotBefore != nil && c.NotBefore.Time().After(now.Add(v.leeway)) {
		return fmt.Errorf("%w: nbf in the future", ErrExpired)
	}
	if c.IssuedAt != nil && c.IssuedAt.Time().After(now.Add(v.leeway)) {
		return fmt.Errorf("%w: iat in the future", ErrExpired)
	}
	if !c.Audience.Contains(audience) {
		return fmt.Errorf("%w: audience %.64q not in token", ErrWrongAudience, audience)
	}
	return nil
}
