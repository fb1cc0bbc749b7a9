package tokens

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	authnv1 "k8s.io/api/authentication/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/lanyard-id/lanyard/internal/clocktest"
)

// fakeAPI is a fake API server answering TokenReviews with status (or err)
// and recording the last spec it saw.
type fakeAPI struct {
	*fake.Clientset
	calls    atomic.Int64
	lastSpec atomic.Pointer[authnv1.TokenReviewSpec]
	status   authnv1.TokenReviewStatus
	err      error
}

func newFakeAPI(status authnv1.TokenReviewStatus, err error) *fakeAPI {
	f := &fakeAPI{Clientset: fake.NewClientset(), status: status, err: err}
	f.PrependReactor("create", "tokenreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		f.calls.Add(1)
		tr := a.(k8stesting.CreateAction).GetObject().(*authnv1.TokenReview).DeepCopy()
		f.lastSpec.Store(&tr.Spec)
		if f.err != nil {
			return true, nil, f.err
		}
		tr.Status = *f.status.DeepCopy()
		return true, tr, nil
	})
	return f
}

// authenticated is the status Kubernetes gives a pod-bound token.
func authenticated() authnv1.TokenReviewStatus {
	return authnv1.TokenReviewStatus{
		Authenticated: true,
		Audiences:     []string{testAudience},
		User: authnv1.UserInfo{
			Username: "system:serviceaccount:default:web",
			UID:      "sa-uid-1",
			Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:default", "system:authenticated"},
			Extra: map[string]authnv1.ExtraValue{
				extraPodName:  {"web-7d9f"},
				extraPodUID:   {"pod-uid-1"},
				extraNodeName: {"node-1"},
				extraNodeUID:  {"node-uid-1"},
				"authentication.kubernetes.io/credential-id": {"JTI=3b1f1d50"},
			},
		},
	}
}

// reviewToken is a JWT-shaped token with the given exp; the fake API does
// not check signatures.
func reviewToken(exp time.Time) string {
	return unsignedToken(`{"alg":"RS256","kid":"k"}`, fmt.Sprintf(`{"exp":%d,"sub":"system:serviceaccount:default:web"}`, exp.Unix()), "c2ln")
}

func newReviewVerifier(t *testing.T, api *fakeAPI, clock *clocktest.Clock, ttl time.Duration) *TokenReviewVerifier {
	t.Helper()
	v, err := NewTokenReviewVerifier(TokenReviewConfig{Cluster: testCluster, Client: api, Clock: clock.Now, CacheTTL: ttl})
	require.NoError(t, err)
	return v
}

func TestTokenReviewVerifier(t *testing.T) {
	clock := newFakeClock()
	exp := clock.Now().Add(time.Hour)
	tok := reviewToken(exp)
	withStatus := func(mod func(*authnv1.TokenReviewStatus)) authnv1.TokenReviewStatus {
		st := authenticated()
		mod(&st)
		return st
	}
	for _, tt := range []struct {
		name      string
		status    authnv1.TokenReviewStatus
		apiErr    error
		token     string
		want      *ServiceAccount
		wantErr   error
		wantCalls int64
	}{
		{
			name: "pod-bound token", status: authenticated(), wantCalls: 1,
			want: &ServiceAccount{
				Cluster: testCluster, Namespace: "default", Name: "web", UID: "sa-uid-1",
				PodName: "web-7d9f", PodUID: "pod-uid-1", NodeName: "node-1", NodeUID: "node-uid-1",
				Audiences: []string{testAudience}, Expiry: exp,
			},
		},
		{
			name:   "no pod or node extras",
			status: withStatus(func(s *authnv1.TokenReviewStatus) { s.User.Extra = nil }), wantCalls: 1,
			want: &ServiceAccount{
				Cluster: testCluster, Namespace: "default", Name: "web", UID: "sa-uid-1",
				Audiences: []string{testAudience}, Expiry: exp,
			},
		},
		{name: "not authenticated", status: authnv1.TokenReviewStatus{Error: "invalid bearer token"}, wantErr: ErrInvalidToken, wantCalls: 1},
		{name: "not authenticated: audience", status: authnv1.TokenReviewStatus{Error: `[invalid bearer token, token audiences ["istio-ca"] is invalid for the target audiences ["lanyard"]]`}, wantErr: ErrWrongAudience, wantCalls: 1},
		{name: "not authenticated: expired", status: authnv1.TokenReviewStatus{Error: "[invalid bearer token, service account token has expired]"}, wantErr: ErrExpired, wantCalls: 1},
		{name: "audience-unaware authenticator", status: withStatus(func(s *authnv1.TokenReviewStatus) { s.Audiences = nil }), wantErr: ErrWrongAudience, wantCalls: 1},
		{name: "other audience confirmed", status: withStatus(func(s *authnv1.TokenReviewStatus) { s.Audiences = []string{"istio-ca"} }), wantErr: ErrWrongAudience, wantCalls: 1},
		{name: "not a service account", status: withStatus(func(s *authnv1.TokenReviewStatus) { s.User.Username = "alice" }), wantErr: ErrInvalidToken, wantCalls: 1},
		{name: "service account username with extra colon", status: withStatus(func(s *authnv1.TokenReviewStatus) { s.User.Username = "system:serviceaccount:default:web:x" }), wantErr: ErrInvalidToken, wantCalls: 1},
		{name: "no uid", status: withStatus(func(s *authnv1.TokenReviewStatus) { s.User.UID = "" }), wantErr: ErrInvalidToken, wantCalls: 1},
		{name: "two pod names", status: withStatus(func(s *authnv1.TokenReviewStatus) { s.User.Extra[extraPodName] = []string{"a", "b"} }), wantErr: ErrInvalidToken, wantCalls: 1},
		{name: "pod uid without pod name", status: withStatus(func(s *authnv1.TokenReviewStatus) { delete(s.User.Extra, extraPodName) }), wantErr: ErrInvalidToken, wantCalls: 1},
		{name: "api error", apiErr: errors.New("connection refused"), wantErr: ErrUnavailable, wantCalls: 1},
		{name: "not a jwt: no api call", token: "opaque-token", wantErr: ErrInvalidToken},
		{name: "legacy token without exp: no api call", token: unsignedToken(`{"alg":"RS256"}`, `{"iss":"kubernetes/serviceaccount"}`, "c2ln"), wantErr: ErrInvalidToken},
		{name: "empty token", token: "-", wantErr: ErrInvalidToken},
	} {
		t.Run(tt.name, func(t *testing.T) {
			api := newFakeAPI(tt.status, tt.apiErr)
			v := newReviewVerifier(t, api, clock, -1)
			token := tok
			switch tt.token {
			case "":
			case "-":
				token = ""
			default:
				token = tt.token
			}
			sa, err := v.Verify(context.Background(), token, testAudience)
			require.Equal(t, tt.wantCalls, api.calls.Load())
			if tt.wantErr != nil {
				require.ErrorIs(t, err, tt.wantErr)
				require.Nil(t, sa)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want.Expiry.Unix(), sa.Expiry.Unix())
			sa.Expiry = tt.want.Expiry
			require.Equal(t, tt.want, sa)
			spec := api.lastSpec.Load()
			require.Equal(t, token, spec.Token)
			require.Equal(t, []string{testAudience}, spec.Audiences)
		})
	}
}

func TestTokenReviewCache(t *testing.T) {
	ctx := context.Background()
	clock := newFakeClock()
	api := newFakeAPI(authenticated(), nil)
	v := newReviewVerifier(t, api, clock, 0) // default 10s
	tok := reviewToken(clock.Now().Add(time.Hour))

	for range 3 {
		_, err := v.Verify(ctx, tok, testAudience)
		require.NoError(t, err)
	}
	require.EqualValues(t, 1, api.calls.Load())
	require.Equal(t, Stats{Requests: 3, CacheHits: 2, Calls: 1}, v.Stats())

	// Another audience is another entry.
	_, err := v.Verify(ctx, tok, "istio-ca")
	require.ErrorIs(t, err, ErrWrongAudience)
	require.EqualValues(t, 2, api.calls.Load())

	clock.Advance(DefaultTokenReviewCacheTTL)
	_, err = v.Verify(ctx, tok, testAudience)
	require.NoError(t, err)
	require.EqualValues(t, 3, api.calls.Load(), "entry expired after the ttl")

	// A token expiring before the ttl is cached only until its exp.
	short := reviewToken(clock.Now().Add(3 * time.Second))
	_, err = v.Verify(ctx, short, testAudience)
	require.NoError(t, err)
	clock.Advance(2 * time.Second)
	_, err = v.Verify(ctx, short, testAudience)
	require.NoError(t, err)
	require.EqualValues(t, 4, api.calls.Load())
	clock.Advance(time.Second)
	_, err = v.Verify(ctx, short, testAudience)
	require.NoError(t, err, "the fake API still says yes")
	require.EqualValues(t, 5, api.calls.Load(), "cache never outlives exp")
}

func TestTokenReviewCacheDisabled(t *testing.T) {
	api := newFakeAPI(authenticated(), nil)
	v := newReviewVerifier(t, api, newFakeClock(), -1)
	tok := reviewToken(time.Now().Add(time.Hour))
	for range 2 {
		_, err := v.Verify(context.Background(), tok, testAudience)
		require.NoError(t, err)
	}
	require.Equal(t, Stats{Requests: 2, Calls: 2}, v.Stats())
}

func TestNewTokenReviewVerifierConfig(t *testing.T) {
	api := newFakeAPI(authenticated(), nil)
	for _, tt := range []struct {
		name    string
		cfg     TokenReviewConfig
		wantErr string
	}{
		{name: "ok", cfg: TokenReviewConfig{Cluster: "c", Client: api}},
		{name: "no cluster", cfg: TokenReviewConfig{Client: api}, wantErr: "cluster is required"},
		{name: "no client", cfg: TokenReviewConfig{Cluster: "c"}, wantErr: "client is required"},
		{name: "negative max entries", cfg: TokenReviewConfig{Cluster: "c", Client: api, CacheMaxEntries: -1}, wantErr: "max entries"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			v, err := NewTokenReviewVerifier(tt.cfg)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			require.NotNil(t, v)
		})
	}
}

func TestUnverifiedExpiry(t *testing.T) {
	for _, tt := range []struct {
		name    string
		token   string
		want    int64
		wantErr string
	}{
		{name: "int", token: unsignedToken(`{}`, `{"exp":1760000000}`, ""), want: 1760000000},
		{name: "float", token: unsignedToken(`{}`, `{"exp":1760000000.4}`, ""), want: 1760000000},
		{name: "no exp", token: unsignedToken(`{}`, `{}`, ""), wantErr: "no exp"},
		{name: "exp string", token: unsignedToken(`{}`, `{"exp":"soon"}`, ""), wantErr: "malformed"},
		{name: "not base64", token: "a.!!!.c", wantErr: "not a jwt"},
		{name: "two parts", token: "a.b", wantErr: "not a jwt"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			exp, err := unverifiedExpiry(tt.token)
			if tt.wantErr != "" {
				require.ErrorIs(t, err, ErrInvalidToken)
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, exp.Unix())
		})
	}
}

func TestTokenReviewVerifierIssuedAt(t *testing.T) {
	clock := newFakeClock()
	iat := clock.Now().Add(-time.Minute)
	tok := unsignedToken(`{"alg":"RS256","kid":"k"}`, fmt.Sprintf(`{"exp":%d,"iat":%d}`, clock.Now().Add(time.Hour).Unix(), iat.Unix()), "c2ln")
	v := newReviewVerifier(t, newFakeAPI(authenticated(), nil), clock, -1)
	sa, err := v.Verify(context.Background(), tok, testAudience)
	require.NoError(t, err)
	require.Equal(t, iat.Unix(), sa.IssuedAt.Unix())
	// No iat: zero.
	sa, err = v.Verify(context.Background(), reviewToken(clock.Now().Add(time.Hour)), testAudience)
	require.NoError(t, err)
	require.True(t, sa.IssuedAt.IsZero())
}
