package agent

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/stretchr/testify/require"

	cav1 "github.com/lanyard-id/lanyard/proto/lanyard/ca/v1"
)

// answers is a fake Identities: each token's subscription answers what the
// test set for it (nothing yet, an SVID, or an error).
type answers struct {
	mu    sync.Mutex
	svid  map[string]*x509svid.SVID
	err   map[string]error
	calls int
}

func newAnswers() *answers {
	return &answers{svid: map[string]*x509svid.SVID{}, err: map[string]error{}}
}

func (a *answers) Subscribe(_ context.Context, w Workload) (Subscription, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.calls++
	return &answerSub{a: a, token: w.Token}, nil
}

func (a *answers) Calls() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.calls
}

type answerSub struct {
	a     *answers
	token string
}

func (s *answerSub) Updates() <-chan struct{} { return nil }
func (s *answerSub) Bundles() *x509bundle.Set { return x509bundle.NewSet() }
func (s *answerSub) Close()                   {}
func (s *answerSub) SVID() (*x509svid.SVID, error) {
	s.a.mu.Lock()
	defer s.a.mu.Unlock()
	return s.a.svid[s.token], s.a.err[s.token]
}

func TestGuard(t *testing.T) {
	ctx := context.Background()
	id := spiffeid.RequireFromString("spiffe://cluster.local/ns/default/sa/app")
	now := time.Unix(1_760_000_000, 0)
	clock := func() time.Time { return now }
	next := newAnswers()
	g, err := NewGuard(GuardConfig{Next: next, MaxPendingTokens: 2, RefusedTokenTTL: 30 * time.Second, MaxRememberedTokens: 3, Clock: clock})
	require.NoError(t, err)
	tok := func(i int) Workload { return Workload{ID: id, Token: fmt.Sprintf("tok-%d", i)} }

	// Two tokens pending: a third distinct one is refused, the same one
	// again and attested workloads are not.
	s1, err := g.Subscribe(ctx, tok(1))
	require.NoError(t, err)
	s2, err := g.Subscribe(ctx, tok(2))
	require.NoError(t, err)
	_, err = g.Subscribe(ctx, tok(3))
	require.ErrorIs(t, err, ErrTooManyPending)
	s1b, err := g.Subscribe(ctx, tok(1))
	require.NoError(t, err)
	_, err = g.Subscribe(ctx, Workload{ID: id, Attested: &Attested{Attestor: "unix"}})
	require.NoError(t, err)

	// The CA refuses token 1 and accepts token 2: room again, and token 1
	// is refused at once without reaching the manager.
	next.mu.Lock()
	next.err["tok-1"] = fmt.Errorf("%w: PermissionDenied", ErrDenied)
	next.svid["tok-2"] = &x509svid.SVID{ID: id}
	next.mu.Unlock()
	_, err = s1.SVID()
	require.ErrorIs(t, err, ErrDenied)
	s1.Close()
	_, err = s1b.SVID()
	require.ErrorIs(t, err, ErrDenied)
	svid, err := s2.SVID()
	require.NoError(t, err)
	require.NotNil(t, svid)
	calls := next.Calls()
	_, err = g.Subscribe(ctx, tok(1))
	require.ErrorIs(t, err, ErrDenied)
	require.Equal(t, calls, next.Calls(), "refused from the negative cache")

	// Accepted tokens pass even when the pending slots are full.
	for i := 10; i < 12; i++ {
		_, err := g.Subscribe(ctx, tok(i))
		require.NoError(t, err)
	}
	_, err = g.Subscribe(ctx, tok(13))
	require.ErrorIs(t, err, ErrTooManyPending)
	_, err = g.Subscribe(ctx, tok(2))
	require.NoError(t, err, "an accepted token is not pending")

	// Tokens 10 and 11 hold the two pending slots.
	g.mu.Lock()
	require.Len(t, g.pending, 2)
	g.mu.Unlock()

	// The negative cache expires.
	now = now.Add(30 * time.Second)
	_, err = g.Subscribe(ctx, tok(1))
	require.ErrorIs(t, err, ErrTooManyPending, "no longer refused from the cache; pending slots still full")
}

func TestGuardMemoryIsBounded(t *testing.T) {
	ctx := context.Background()
	id := spiffeid.RequireFromString("spiffe://cluster.local/ns/default/sa/app")
	next := newAnswers()
	g, err := NewGuard(GuardConfig{Next: next, MaxRememberedTokens: 100})
	require.NoError(t, err)
	for i := range 10_000 {
		w := Workload{ID: id, Token: fmt.Sprintf("forged-%d", i)}
		next.mu.Lock()
		next.err[w.Token] = ErrDenied
		next.mu.Unlock()
		s, err := g.Subscribe(ctx, w)
		require.NoError(t, err)
		_, err = s.SVID()
		require.ErrorIs(t, err, ErrDenied)
		s.Close()
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	require.Empty(t, g.pending)
	require.Len(t, g.refused, 100)
}

func TestManagerDropsRefusedTokenEntryOnClose(t *testing.T) {
	m, err := NewManager(ManagerConfig{Signer: &shortSigner{}, TrustDomain: spiffeid.RequireTrustDomainFromString("cluster.local")})
	require.NoError(t, err)
	id := spiffeid.RequireFromString("spiffe://cluster.local/ns/default/sa/app")
	s, err := m.Subscribe(context.Background(), Workload{ID: id, Token: "forged"})
	require.NoError(t, err)
	m.mu.Lock()
	require.Len(t, m.entries, 1)
	for _, e := range m.entries {
		e.err = fmt.Errorf("%w: PermissionDenied", ErrDenied) // as apply records a refusal
	}
	m.mu.Unlock()
	s.Close()
	m.mu.Lock()
	defer m.mu.Unlock()
	require.Empty(t, m.entries)
}

// tokenLog records the tokens of every entry sent, then signs.
type tokenLog struct {
	next Signer
	mu   sync.Mutex
	seen []string
}

func (l *tokenLog) BatchSign(ctx context.Context, reqs []*cav1.SVIDRequest) ([]*cav1.SVIDResult, error) {
	l.mu.Lock()
	for _, r := range reqs {
		l.seen = append(l.seen, r.GetToken())
	}
	l.mu.Unlock()
	return l.next.BatchSign(ctx, reqs)
}

func (l *tokenLog) last() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.seen[len(l.seen)-1]
}

func TestManagerRenewalUsesRotatedTokenFile(t *testing.T) {
	c := newTestCA(t, nil, nil)
	log := &tokenLog{next: newFakeSigner(c, testTokens)}
	m := newTestManager(t, c, log, func(cfg *ManagerConfig) { cfg.TTL = 2 * time.Second })
	var mu sync.Mutex
	current := "token-web-1"
	w := tokenWorkload(current, "shop", "web")
	w.TokenSource = func() (string, error) {
		mu.Lock()
		defer mu.Unlock()
		return current, nil
	}
	sub, err := m.Subscribe(context.Background(), w)
	require.NoError(t, err)
	defer sub.Close()
	first := waitSVID(t, sub, nil, 5*time.Second)
	require.Equal(t, "token-web-1", log.last())

	// The kubelet rotates the file; the stream is not reopened.
	mu.Lock()
	current = "token-web-2"
	mu.Unlock()
	second := waitSVID(t, sub, first, 10*time.Second)
	require.NotEqual(t, serialOf(first), serialOf(second))
	require.Equal(t, "token-web-2", log.last(), "the renewal sent the rotated token")
	got, err := sub.SVID()
	require.NoError(t, err, "the stream never saw an error")
	require.NotNil(t, got)
}
