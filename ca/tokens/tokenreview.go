package tokens

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-jose/go-jose/v4/json"
	"github.com/go-jose/go-jose/v4/jwt"
	authnv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// DefaultTokenReviewCacheTTL is how long a TokenReviewVerifier keeps a
// positive result.
const DefaultTokenReviewCacheTTL = 10 * time.Second

// Keys of TokenReview status.user.extra that Kubernetes sets for
// pod-bound service-account tokens.
const (
	extraPodName  = "authentication.kubernetes.io/pod-name"
	extraPodUID   = "authentication.kubernetes.io/pod-uid"
	extraNodeName = "authentication.kubernetes.io/node-name"
	extraNodeUID  = "authentication.kubernetes.io/node-uid"
)

// TokenReviewConfig configures a TokenReviewVerifier.
type TokenReviewConfig struct {
	// Cluster names the cluster; it is copied into every ServiceAccount.
	// Required.
	Cluster string
	// Client reaches the cluster's API server; it needs RBAC permission to
	// create tokenreviews (authentication.k8s.io). Required.
	Client kubernetes.Interface
	// CacheTTL is how long a positive result is kept, never past the
	// token's exp. Default 10s; negative disables the cache.
	CacheTTL time.Duration
	// CacheMaxEntries bounds the cache. Default 10000.
	CacheMaxEntries int
	// Clock returns the current time. Default time.Now.
	Clock func() time.Time
	// Logger receives rejection details. Default: discard.
	Logger *slog.Logger
}

// TokenReviewVerifier verifies tokens by asking the cluster's API server
// (TokenReview, authentication.k8s.io/v1). It accepts only service-account
// tokens that carry an exp claim. It is safe for concurrent use.
type TokenReviewVerifier struct {
	front    Verifier // the cache, or the reviewer when caching is off
	cache    *Cache
	review   *reviewer
	requests atomic.Uint64
}

var _ Verifier = (*TokenReviewVerifier)(nil)

// NewTokenReviewVerifier fills the defaults of cfg, validates it and
// returns a verifier.
func NewTokenReviewVerifier(cfg TokenReviewConfig) (*TokenReviewVerifier, error) {
	if cfg.Cluster == "" {
		return nil, errors.New("tokenreview verifier: cluster is required")
	}
	if cfg.Client == nil {
		return nil, errors.New("tokenreview verifier: kubernetes client is required")
	}
	if cfg.CacheTTL == 0 {
		cfg.CacheTTL = DefaultTokenReviewCacheTTL
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	r := &reviewer{cluster: cfg.Cluster, client: cfg.Client, log: cfg.Logger.With("cluster", cfg.Cluster)}
	v := &TokenReviewVerifier{front: r, review: r}
	if cfg.CacheTTL > 0 {
		c, err := NewCache(r, CacheConfig{TTL: cfg.CacheTTL, MaxEntries: cfg.CacheMaxEntries, Clock: cfg.Clock})
		if err != nil {
			return nil, fmt.Errorf("tokenreview verifier: %w", err)
		}
		v.front, v.cache = c, c
	}
	return v, nil
}

// Verify asks the API server whether the token is valid for audience.
// Errors wrap ErrInvalidToken, ErrExpired, ErrWrongAudience or (when the
// API cannot be reached or refuses the review) ErrUnavailable.
func (v *TokenReviewVerifier) Verify(ctx context.Context, token, audience string) (*ServiceAccount, error) {
	v.requests.Add(1)
	return v.front.Verify(ctx, token, audience)
}

// Stats returns the verifier's counters; Calls counts TokenReviews created.
func (v *TokenReviewVerifier) Stats() Stats {
	s := Stats{Requests: v.requests.Load(), Calls: v.review.calls.Load()}
	if v.cache != nil {
		s.CacheHits = v.cache.Stats().CacheHits
	}
	return s
}

// reviewer is the uncached TokenReview client.
type reviewer struct {
	cluster string
	client  kubernetes.Interface
	log     *slog.Logger
	calls   atomic.Uint64
}

func (r *reviewer) Verify(ctx context.Context, token, audience string) (*ServiceAccount, error) {
	if err := checkRequest(token, audience); err != nil {
		return nil, err
	}
	exp, iat, err := unverifiedTimes(token)
	if err != nil {
		return nil, err
	}
	r.calls.Add(1)
	tr, err := r.client.AuthenticationV1().TokenReviews().Create(ctx, &authnv1.TokenReview{
		Spec: authnv1.TokenReviewSpec{Token: token, Audiences: []string{audience}},
	}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("%w: create tokenreview: %w", ErrUnavailable, err)
	}
	st := tr.Status
	if !st.Authenticated {
		r.log.Debug("tokenreview rejected token", "reason", st.Error)
		msg := strings.ToLower(st.Error)
		switch {
		case strings.Contains(msg, "audience"):
			return nil, fmt.Errorf("%w: tokenreview: audience not accepted", ErrWrongAudience)
		case strings.Contains(msg, "expired"):
			return nil, fmt.Errorf("%w: tokenreview: token expired", ErrExpired)
		default:
			return nil, fmt.Errorf("%w: tokenreview: not authenticated", ErrInvalidToken)
		}
	}
	// An audience-unaware authenticator answers with no audiences, which
	// means "valid for the API server": not for us.
	if !slices.Contains(st.Audiences, audience) {
		return nil, fmt.Errorf("%w: tokenreview: audience not confirmed", ErrWrongAudience)
	}
	ns, name, ok := parseServiceAccountUsername(st.User.Username)
	if !ok {
		return nil, fmt.Errorf("%w: tokenreview: not a service account", ErrInvalidToken)
	}
	id := &identity{namespace: ns, name: name, uid: st.User.UID}
	for _, f := range []struct {
		key string
		dst *string
	}{
		{extraPodName, &id.podName}, {extraPodUID, &id.podUID},
		{extraNodeName, &id.nodeName}, {extraNodeUID, &id.nodeUID},
	} {
		switch vals := st.User.Extra[f.key]; len(vals) {
		case 0:
		case 1:
			*f.dst = vals[0]
		default:
			return nil, fmt.Errorf("%w: tokenreview: several values for %s", ErrInvalidToken, f.key)
		}
	}
	if err := id.check(); err != nil {
		return nil, fmt.Errorf("%w: tokenreview: %w", ErrInvalidToken, err)
	}
	sa := id.serviceAccount(r.cluster, "", slices.Clone(st.Audiences), exp)
	sa.IssuedAt = iat
	return sa, nil
}

// unverifiedExpiry decodes the exp claim of a JWT without verifying it. It
// is used only to bound caching and to refuse tokens that never expire
// (legacy secret-based tokens); the API server does the verifying.
func unverifiedExpiry(token string) (time.Time, error) {
	exp, _, err := unverifiedTimes(token)
	return exp, err
}

// unverifiedTimes decodes exp, which must be there, and iat (zero when
// absent) like unverifiedExpiry.
func unverifiedTimes(token string) (exp, iat time.Time, err error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return time.Time{}, time.Time{}, fmt.Errorf("%w: not a jwt", ErrInvalidToken)
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return time.Time{}, time.Time{}, fmt.Errorf("%w: not a jwt", ErrInvalidToken)
	}
	var claims struct {
		Expiry   *jwt.NumericDate `json:"exp"`
		IssuedAt *jwt.NumericDate `json:"iat"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		return time.Time{}, time.Time{}, fmt.Errorf("%w: malformed claims", ErrInvalidToken)
	}
	if claims.Expiry == nil {
		return time.Time{}, time.Time{}, fmt.Errorf("%w: no exp claim", ErrInvalidToken)
	}
	if claims.IssuedAt != nil {
		iat = claims.IssuedAt.Time()
	}
	return claims.Expiry.Time(), iat, nil
}
