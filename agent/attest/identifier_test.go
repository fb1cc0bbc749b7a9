package attest_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"github.com/lanyard-id/lanyard/agent"
	"github.com/lanyard-id/lanyard/agent/attest"
	"github.com/lanyard-id/lanyard/ca/tokens"
)

var td = spiffeid.RequireTrustDomainFromString("cluster.local")

// unsignedToken is a JWT with the claims of a projected token and a
// signature no one checks here.
func unsignedToken(t testing.TB, claims any) string {
	t.Helper()
	enc := func(v any) string {
		b, err := json.Marshal(v)
		require.NoError(t, err)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	return enc(map[string]string{"alg": "RS256", "kid": "k"}) + "." + enc(claims) + ".c2lnbmF0dXJl"
}

func projected(ns, sa string) map[string]any {
	return map[string]any{
		"aud": []string{"lanyard"}, "sub": "system:serviceaccount:" + ns + ":" + sa,
		"kubernetes.io": map[string]any{"namespace": ns, "serviceaccount": map[string]any{"name": sa, "uid": "u"}},
	}
}

func withBearer(ctx context.Context, values ...string) context.Context {
	md := metadata.MD{}
	for _, v := range values {
		md.Append("authorization", v)
	}
	return metadata.NewIncomingContext(ctx, md)
}

func withPeer(ctx context.Context, p attest.Peer) context.Context {
	return peer.NewContext(ctx, &peer.Peer{AuthInfo: attest.AuthInfo{Peer: p}})
}

// attestorFunc adapts a function to attest.Attestor.
type attestorFunc func(context.Context, attest.Peer) (*agent.Attested, error)

func (f attestorFunc) Attest(ctx context.Context, p attest.Peer) (*agent.Attested, error) {
	return f(ctx, p)
}

func fixed(a *agent.Attested, err error) attest.Attestor {
	return attestorFunc(func(context.Context, attest.Peer) (*agent.Attested, error) { return a, err })
}

func TestIdentify(t *testing.T) {
	dev, err := tokens.LoadOrCreateDevIssuer(t.TempDir(), "https://kubernetes.default.svc.cluster.local")
	require.NoError(t, err)
	realToken, err := dev.Mint(tokens.DevClaims{Namespace: "payments", ServiceAccount: "ledger", Audiences: []string{"lanyard"}, PodName: "ledger-0"})
	require.NoError(t, err)
	webToken := unsignedToken(t, projected("shop", "web"))
	uid1000 := uint32(1000)
	unix, err := attest.NewUnix(attest.UnixConfig{Rules: []attest.UnixRule{{UID: &uid1000, Namespace: "dev", ServiceAccount: "me"}}})
	require.NoError(t, err)
	boom := errors.New("kubernetes unavailable")
	podAttested := &agent.Attested{Attestor: "k8s", Namespace: "shop", ServiceAccount: "cart", PodName: "cart-1", PodUID: "uid-1"}

	for _, tt := range []struct {
		name       string
		ctx        context.Context
		attestors  []attest.Attestor
		wantID     string
		wantToken  string
		wantAttest *agent.Attested
		wantErr    error // agent.ErrNotIdentified, attest.ErrInvalidToken, or another
	}{
		{
			name: "kubernetes projected token", ctx: withBearer(context.Background(), "Bearer "+realToken),
			wantID: "spiffe://cluster.local/ns/payments/sa/ledger", wantToken: realToken,
		},
		{
			name: "lowercase scheme", ctx: withBearer(context.Background(), "bearer "+webToken),
			wantID: "spiffe://cluster.local/ns/shop/sa/web", wantToken: webToken,
		},
		{
			name:      "token decides even when the peer is attestable",
			ctx:       withBearer(withPeer(context.Background(), attest.Peer{PID: 1, UID: 1000}), "Bearer "+webToken),
			attestors: []attest.Attestor{unix},
			wantID:    "spiffe://cluster.local/ns/shop/sa/web", wantToken: webToken,
		},
		{name: "two authorization headers", ctx: withBearer(context.Background(), "Bearer "+webToken, "Bearer "+webToken), wantErr: attest.ErrInvalidToken},
		{name: "basic auth", ctx: withBearer(context.Background(), "Basic dXNlcjpwYXNz"), wantErr: attest.ErrInvalidToken},
		{name: "empty bearer", ctx: withBearer(context.Background(), "Bearer   "), wantErr: attest.ErrInvalidToken},
		{name: "not a jwt", ctx: withBearer(context.Background(), "Bearer abc"), wantErr: attest.ErrInvalidToken},
		{name: "legacy token without kubernetes.io claim", ctx: withBearer(context.Background(), "Bearer "+unsignedToken(t, map[string]any{
			"kubernetes.io/serviceaccount/namespace": "shop", "sub": "system:serviceaccount:shop:web",
		})), wantErr: attest.ErrInvalidToken},
		{name: "bad namespace in claims", ctx: withBearer(context.Background(), "Bearer "+unsignedToken(t, projected("Shop_", "web"))), wantErr: attest.ErrInvalidToken},
		{
			name:       "first attestor that knows the peer decides",
			ctx:        withPeer(context.Background(), attest.Peer{PID: 7, UID: 1000}),
			attestors:  []attest.Attestor{fixed(nil, nil), fixed(podAttested, nil), unix},
			wantID:     "spiffe://cluster.local/ns/shop/sa/cart",
			wantAttest: podAttested,
		},
		{
			name:       "unix mapping",
			ctx:        withPeer(context.Background(), attest.Peer{PID: 7, UID: 1000}),
			attestors:  []attest.Attestor{fixed(nil, nil), unix},
			wantID:     "spiffe://cluster.local/ns/dev/sa/me",
			wantAttest: &agent.Attested{Attestor: "unix", Namespace: "dev", ServiceAccount: "me"},
		},
		{
			name:      "an attestor error stops the chain",
			ctx:       withPeer(context.Background(), attest.Peer{PID: 7, UID: 1000}),
			attestors: []attest.Attestor{fixed(nil, boom), unix},
			wantErr:   boom,
		},
		{
			name:      "no attestor knows the peer",
			ctx:       withPeer(context.Background(), attest.Peer{PID: 7, UID: 1001}),
			attestors: []attest.Attestor{unix},
			wantErr:   agent.ErrNotIdentified,
		},
		{
			name:      "attested name that is no valid service account",
			ctx:       withPeer(context.Background(), attest.Peer{PID: 7}),
			attestors: []attest.Attestor{fixed(&agent.Attested{Attestor: "x", Namespace: "a/b", ServiceAccount: "c"}, nil)},
			wantErr:   agent.ErrNotIdentified,
		},
		{name: "no token and no peer", ctx: context.Background(), attestors: []attest.Attestor{unix}, wantErr: agent.ErrNotIdentified},
	} {
		t.Run(tt.name, func(t *testing.T) {
			id, err := attest.NewIdentifier(attest.IdentifierConfig{TrustDomain: td, Attestors: tt.attestors})
			require.NoError(t, err)
			w, err := id.Identify(tt.ctx)
			if tt.wantErr != nil {
				require.ErrorIs(t, err, tt.wantErr)
				if errors.Is(tt.wantErr, attest.ErrInvalidToken) {
					require.ErrorIs(t, err, agent.ErrNotIdentified)
				}
				if tt.wantErr == boom {
					require.NotErrorIs(t, err, agent.ErrNotIdentified)
				}
				require.NotContains(t, err.Error(), webToken)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.wantID, w.ID.String())
			require.Equal(t, tt.wantToken, w.Token)
			require.Equal(t, tt.wantAttest, w.Attested)
		})
	}
}

func TestIdentifySidecar(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "token")
	// Kubernetes swaps projected files atomically; so does this test.
	write := func(tok string) {
		tmp := filepath.Join(dir, "token.tmp")
		require.NoError(t, os.WriteFile(tmp, []byte(tok+"\n"), 0o600))
		require.NoError(t, os.Rename(tmp, path))
	}
	id, err := attest.NewIdentifier(attest.IdentifierConfig{TrustDomain: td, TokenFile: path})
	require.NoError(t, err)

	// Not there yet.
	_, err = id.Identify(context.Background())
	require.ErrorIs(t, err, agent.ErrNotIdentified)

	first := unsignedToken(t, projected("shop", "web"))
	write(first)
	// Whatever the caller presents, and whoever it is, it is the pod.
	ctx := withBearer(withPeer(context.Background(), attest.Peer{PID: 3, UID: 1234}), "Bearer "+unsignedToken(t, projected("kube-system", "admin")))
	w, err := id.Identify(ctx)
	require.NoError(t, err)
	require.Equal(t, "spiffe://cluster.local/ns/shop/sa/web", w.ID.String())
	require.Equal(t, first, w.Token)
	require.Nil(t, w.Attested)

	// Rotated by the kubelet: the next call sees the new token.
	second := unsignedToken(t, map[string]any{"kubernetes.io": map[string]any{
		"namespace": "shop", "serviceaccount": map[string]any{"name": "web"}, "pod": map[string]any{"name": "web-1"},
	}})
	require.NotEqual(t, first, second)
	firstWorkload := w
	write(second)
	// A subscription made with the first token renews with the second.
	require.NotNil(t, firstWorkload.TokenSource)
	tok, err := firstWorkload.TokenSource()
	require.NoError(t, err)
	require.Equal(t, second, tok)
	w, err = id.Identify(context.Background())
	require.NoError(t, err)
	require.Equal(t, second, w.Token)

	write("garbage")
	_, err = id.Identify(context.Background())
	require.ErrorIs(t, err, attest.ErrInvalidToken)
	require.ErrorIs(t, err, agent.ErrNotIdentified)
}

func TestNewIdentifierValidates(t *testing.T) {
	_, err := attest.NewIdentifier(attest.IdentifierConfig{})
	require.Error(t, err)
	_, err = attest.NewIdentifier(attest.IdentifierConfig{TrustDomain: td, Attestors: []attest.Attestor{nil}})
	require.Error(t, err)
}
