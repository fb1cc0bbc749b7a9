package ca

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/lanyard-id/lanyard/internal/clocktest"

	"github.com/stretchr/testify/require"

	"github.com/lanyard-id/lanyard/ca/upstream"
)

// fakeAfter replaces time.After in Run. Each call hands the test a
// fakeTimer; the test advances the fake clock and fires it. Run blocks in
// After until the test takes the timer, so the test always knows Run is
// idle, waiting.
type fakeAfter struct {
	calls chan fakeTimer
	stop  chan struct{}
}

type fakeTimer struct {
	d  time.Duration
	ch chan time.Time
}

func newFakeAfter() *fakeAfter {
	return &fakeAfter{calls: make(chan fakeTimer), stop: make(chan struct{})}
}

func (f *fakeAfter) After(d time.Duration) <-chan time.Time {
	tm := fakeTimer{d: d, ch: make(chan time.Time, 1)}
	select {
	case f.calls <- tm:
	case <-f.stop:
	}
	return tm.ch
}

// next returns the timer Run is waiting on.
func (f *fakeAfter) next(t *testing.T) fakeTimer {
	t.Helper()
	select {
	case tm := <-f.calls:
		return tm
	case <-time.After(10 * time.Second):
		t.Fatal("Run is not waiting on a timer")
		return fakeTimer{}
	}
}

// fire lets d pass on the clock and fires the timer.
func (tm fakeTimer) fire(clock *clocktest.Clock) {
	clock.Advance(tm.d)
	tm.ch <- clock.Now()
}

// fakeUpstream wraps a real upstream and can fail, add roots, or hand out
// bad certificates.
type fakeUpstream struct {
	inner upstream.Authority

	mu         sync.Mutex
	failMints  int // the next failMints mints fail
	mints      int
	bundles    int
	extraRoots []*x509.Certificate
	bundleErr  error
	tamper     func(*upstream.MintResponse)
}

func (u *fakeUpstream) MintX509CA(ctx context.Context, req upstream.MintRequest) (*upstream.MintResponse, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.mints++
	if u.failMints > 0 {
		u.failMints--
		return nil, errors.New("upstream unavailable")
	}
	resp, err := u.inner.MintX509CA(ctx, req)
	if err != nil {
		return nil, err
	}
	resp.Roots = append(resp.Roots, u.extraRoots...)
	if u.tamper != nil {
		u.tamper(resp)
	}
	return resp, nil
}

func (u *fakeUpstream) Bundle(ctx context.Context) ([]*x509.Certificate, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.bundles++
	if u.bundleErr != nil {
		return nil, u.bundleErr
	}
	roots, err := u.inner.Bundle(ctx)
	if err != nil {
		return nil, err
	}
	return append(append([]*x509.Certificate(nil), roots...), u.extraRoots...), nil
}

func (u *fakeUpstream) set(f func(u *fakeUpstream)) {
	u.mu.Lock()
	defer u.mu.Unlock()
	f(u)
}

func (u *fakeUpstream) counts() (mints, bundles int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.mints, u.bundles
}

func newSelfSigned(t testing.TB, clock *clocktest.Clock) *upstream.SelfSigned {
	t.Helper()
	s, err := upstream.NewSelfSigned(upstream.SelfSignedConfig{Dir: t.TempDir(), TrustDomain: testTD.Name(), Clock: clock.Now})
	require.NoError(t, err)
	return s
}

type authHarness struct {
	auth    *Authority
	up      *fakeUpstream
	clock   *clocktest.Clock
	after   *fakeAfter
	mu      sync.Mutex
	rotated []*X509CA
}

func newAuthHarness(t *testing.T, cfg AuthorityConfig) *authHarness {
	t.Helper()
	h := &authHarness{clock: newFakeClock(), after: newFakeAfter()}
	h.up = &fakeUpstream{inner: newSelfSigned(t, h.clock)}
	cfg.TrustDomain = testTD
	cfg.Upstream = h.up
	cfg.Name = "replica-0"
	cfg.Clock = h.clock.Now
	cfg.After = h.after.After
	cfg.OnRotate = func(x *X509CA) {
		h.mu.Lock()
		defer h.mu.Unlock()
		h.rotated = append(h.rotated, x)
	}
	auth, err := NewAuthority(cfg)
	require.NoError(t, err)
	h.auth = auth
	return h
}

func (h *authHarness) rotations() []*X509CA {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]*X509CA(nil), h.rotated...)
}

// run starts Run and stops it at the end of the test.
func (h *authHarness) run(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.auth.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		close(h.after.stop)
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(10 * time.Second):
			t.Error("Run did not stop")
		}
	})
}

func (h *authHarness) current(t *testing.T) *X509CA {
	t.Helper()
	x, err := h.auth.Current()
	require.NoError(t, err)
	return x
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func TestNewAuthority(t *testing.T) {
	up := &fakeUpstream{}
	for _, tt := range []struct {
		name    string
		cfg     AuthorityConfig
		wantErr string
	}{
		{name: "defaults", cfg: AuthorityConfig{TrustDomain: testTD, Upstream: up}},
		{name: "one minute", cfg: AuthorityConfig{TrustDomain: testTD, Upstream: up, TTL: time.Minute}},
		{name: "no upstream", cfg: AuthorityConfig{TrustDomain: testTD}, wantErr: "upstream is required"},
		{name: "no trust domain", cfg: AuthorityConfig{Upstream: up}, wantErr: "trust domain is required"},
		{name: "TTL under a minute", cfg: AuthorityConfig{TrustDomain: testTD, Upstream: up, TTL: 59 * time.Second}, wantErr: "under a minute"},
		{name: "negative TTL", cfg: AuthorityConfig{TrustDomain: testTD, Upstream: up, TTL: -time.Hour}, wantErr: "under a minute"},
		{name: "negative bundle refresh", cfg: AuthorityConfig{TrustDomain: testTD, Upstream: up, BundleRefresh: -time.Second}, wantErr: "bundle refresh"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a, err := NewAuthority(tt.cfg)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			require.NotNil(t, a.cfg.Clock)
			require.NotNil(t, a.cfg.After)
			require.Equal(t, time.Minute, a.cfg.BundleRefresh)
			require.Equal(t, testTD, a.Bundle().TrustDomain)
		})
	}
}

func TestAuthorityPrepare(t *testing.T) {
	h := newAuthHarness(t, AuthorityConfig{TTL: 6 * time.Hour})
	_, err := h.auth.Current()
	require.ErrorIs(t, err, ErrNotReady)
	require.Zero(t, h.auth.Bundle().Sequence)
	require.Empty(t, h.auth.Bundle().Roots)
	changed := h.auth.BundleChanged()

	require.NoError(t, h.auth.Prepare(context.Background()))

	x := h.current(t)
	c := x.Certificate
	require.True(t, c.IsCA)
	require.True(t, c.MaxPathLenZero)
	require.Equal(t, "Lanyard intermediate replica-0", c.Subject.CommonName)
	require.Len(t, c.URIs, 1)
	require.Equal(t, "spiffe://example.org", c.URIs[0].String())
	require.Equal(t, h.clock.Now().Add(6*time.Hour), c.NotAfter)
	require.Equal(t, hex.EncodeToString(c.SubjectKeyId), x.KeyID)
	require.NotEmpty(t, x.KeyID)
	require.Equal(t, []*x509.Certificate{c}, x.Chain)
	require.Equal(t, c.PublicKey, x.Signer.Public())
	require.IsType(t, &ecdsa.PublicKey{}, c.PublicKey)

	b := h.auth.Bundle()
	require.Equal(t, int64(1), b.Sequence)
	require.Len(t, b.Roots, 1)
	require.NoError(t, c.CheckSignatureFrom(b.Roots[0]))
	require.True(t, isClosed(changed))
	require.False(t, isClosed(h.auth.BundleChanged()))
	require.Equal(t, []*X509CA{x}, h.rotations())
}

func TestAuthorityKeyTypes(t *testing.T) {
	for _, tt := range []struct {
		name          string
		typ, curve    string
		size          int
		want          any
		wantPrepErr   bool
		wantErrString string
	}{
		{name: "P-384", typ: "EC", curve: "P-384", want: &ecdsa.PublicKey{}},
		{name: "RSA", typ: "RSA", size: 2048, want: &rsa.PublicKey{}},
		{name: "Ed25519", typ: "OKP", curve: "Ed25519", want: ed25519.PublicKey{}},
		{name: "unknown", typ: "DSA", wantPrepErr: true, wantErrString: "generate intermediate key"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newAuthHarness(t, AuthorityConfig{KeyType: tt.typ, KeyCurve: tt.curve, KeySize: tt.size})
			err := h.auth.Prepare(context.Background())
			if tt.wantPrepErr {
				require.ErrorContains(t, err, tt.wantErrString)
				_, err = h.auth.Current()
				require.ErrorIs(t, err, ErrNotReady)
				return
			}
			require.NoError(t, err)
			require.IsType(t, tt.want, h.current(t).Certificate.PublicKey)
		})
	}
}

func TestAuthorityExpired(t *testing.T) {
	h := newAuthHarness(t, AuthorityConfig{TTL: time.Minute})
	require.NoError(t, h.auth.Prepare(context.Background()))
	h.clock.Advance(59 * time.Second)
	h.current(t)
	h.clock.Advance(time.Second)
	_, err := h.auth.Current()
	require.ErrorIs(t, err, ErrNotReady)
	require.ErrorContains(t, err, "expired")
}

func TestAuthorityPrepareRefusesBadUpstream(t *testing.T) {
	otherClock := newFakeClock()
	other := newSelfSigned(t, otherClock)
	for _, tt := range []struct {
		name    string
		tamper  func(t *testing.T, r *upstream.MintResponse)
		wantErr string
	}{
		{
			name:    "no certificate",
			tamper:  func(_ *testing.T, r *upstream.MintResponse) { r.CertChain = nil },
			wantErr: "no certificate",
		},
		{
			name: "certificate for another key",
			tamper: func(t *testing.T, r *upstream.MintResponse) {
				resp, err := other.MintX509CA(context.Background(), upstream.MintRequest{CSR: csrFor(t, keyP256), TTL: time.Hour})
				require.NoError(t, err)
				r.CertChain = resp.CertChain
			},
			wantErr: "does not match our key",
		},
		{
			name: "roots of another CA",
			tamper: func(t *testing.T, r *upstream.MintResponse) {
				roots, err := other.Bundle(context.Background())
				require.NoError(t, err)
				r.Roots = roots
			},
			wantErr: "does not verify",
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newAuthHarness(t, AuthorityConfig{})
			h.up.set(func(u *fakeUpstream) { u.tamper = func(r *upstream.MintResponse) { tt.tamper(t, r) } })
			require.ErrorContains(t, h.auth.Prepare(context.Background()), tt.wantErr)
			_, err := h.auth.Current()
			require.ErrorIs(t, err, ErrNotReady)
			require.Empty(t, h.rotations())
		})
	}
}

func TestAuthorityRunRenewsAtHalfLife(t *testing.T) {
	h := newAuthHarness(t, AuthorityConfig{TTL: 2 * time.Minute, BundleRefresh: time.Hour})
	require.NoError(t, h.auth.Prepare(context.Background()))
	first := h.current(t)
	h.run(t)

	// NotBefore is backdated a quarter of the TTL (30 s, under
	// upstream.IntermediateBackdate): half-life is 45 s from now.
	tm := h.after.next(t)
	require.Equal(t, 45*time.Second, tm.d)

	// Woken early (a real timer may be), Run does not renew.
	tm.d = 30 * time.Second
	tm.fire(h.clock)
	tm = h.after.next(t)
	require.Equal(t, 15*time.Second, tm.d)
	require.Same(t, first, h.current(t))
	require.Len(t, h.rotations(), 1)

	tm.fire(h.clock)
	tm = h.after.next(t)
	second := h.current(t)
	require.NotSame(t, first, second)
	require.NotEqual(t, first.Certificate.SerialNumber, second.Certificate.SerialNumber)
	require.NotEqual(t, first.KeyID, second.KeyID)
	require.Equal(t, h.clock.Now().Add(2*time.Minute), second.Certificate.NotAfter)
	require.Equal(t, 45*time.Second, tm.d)

	// An hour of renewals: every intermediate is replaced at half-life and
	// there is always a valid one.
	for range 60 {
		tm.fire(h.clock)
		x := h.current(t)
		require.Greater(t, x.Certificate.NotAfter.Sub(h.clock.Now()), time.Minute)
		tm = h.after.next(t)
	}
	require.Len(t, h.rotations(), 62)
	// The bundle did not change: the same root signed every intermediate.
	require.Equal(t, int64(1), h.auth.Bundle().Sequence)
}

func TestAuthorityRunWithoutPrepare(t *testing.T) {
	h := newAuthHarness(t, AuthorityConfig{})
	h.run(t)
	tm := h.after.next(t)
	require.Zero(t, tm.d)
	tm.fire(h.clock)
	h.after.next(t)
	h.current(t)
	require.Equal(t, int64(1), h.auth.Bundle().Sequence)
}

func TestAuthorityBundleChanges(t *testing.T) {
	h := newAuthHarness(t, AuthorityConfig{BundleRefresh: time.Minute})
	require.NoError(t, h.auth.Prepare(context.Background()))
	first := h.auth.Bundle()
	require.Equal(t, int64(1), first.Sequence)
	changed := h.auth.BundleChanged()
	h.run(t)

	// Same roots: no change.
	tm := h.after.next(t)
	require.Equal(t, time.Minute, tm.d)
	tm.fire(h.clock)
	tm = h.after.next(t)
	require.Same(t, first, h.auth.Bundle())
	require.False(t, isClosed(changed))

	// A new root joins upstream: the next refresh publishes it.
	newRoot := newSelfSigned(t, h.clock)
	newRoots, err := newRoot.Bundle(context.Background())
	require.NoError(t, err)
	h.up.set(func(u *fakeUpstream) { u.extraRoots = newRoots })
	tm.fire(h.clock)
	tm = h.after.next(t)
	require.True(t, isClosed(changed))
	second := h.auth.Bundle()
	require.Equal(t, int64(2), second.Sequence)
	require.Len(t, second.Roots, 2)
	require.True(t, second.Roots[1].Equal(newRoots[0]))
	require.Len(t, first.Roots, 1, "a published bundle is never changed in place")
	changed = h.auth.BundleChanged()
	require.False(t, isClosed(changed))

	// A failing bundle read keeps the bundle and Run goes on.
	h.up.set(func(u *fakeUpstream) { u.bundleErr = errors.New("vault sealed") })
	tm.fire(h.clock)
	tm = h.after.next(t)
	require.Same(t, second, h.auth.Bundle())
	require.False(t, isClosed(changed))

	// The old root retires.
	h.up.set(func(u *fakeUpstream) { u.bundleErr = nil; u.extraRoots = nil })
	tm.fire(h.clock)
	h.after.next(t)
	require.True(t, isClosed(changed))
	require.Equal(t, int64(3), h.auth.Bundle().Sequence)
	require.Len(t, h.auth.Bundle().Roots, 1)
}

func TestAuthorityRunRetriesFailingUpstream(t *testing.T) {
	h := newAuthHarness(t, AuthorityConfig{BundleRefresh: time.Hour})
	h.up.set(func(u *fakeUpstream) { u.failMints = 1 })
	require.ErrorContains(t, h.auth.Prepare(context.Background()), "upstream unavailable")
	_, err := h.auth.Current()
	require.ErrorIs(t, err, ErrNotReady)

	h.up.set(func(u *fakeUpstream) { u.failMints = 3 })
	h.run(t)
	tm := h.after.next(t)
	require.Zero(t, tm.d)
	// Backoff doubles from 500 ms, with jitter in its upper half.
	for i, want := range []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second} {
		tm.fire(h.clock)
		tm = h.after.next(t)
		require.GreaterOrEqual(t, tm.d, want/2, "retry %d", i)
		require.LessOrEqual(t, tm.d, want, "retry %d", i)
		_, err := h.auth.Current()
		require.ErrorIs(t, err, ErrNotReady)
	}
	tm.fire(h.clock)
	h.after.next(t)
	h.current(t)
	mints, _ := h.up.counts()
	require.Equal(t, 5, mints)
}

// A frequent bundle refresh must not postpone a renewal retry forever: the
// retry time is absolute, not restarted on every refresh.
func TestAuthorityRetryNotStarvedByBundleRefresh(t *testing.T) {
	h := newAuthHarness(t, AuthorityConfig{TTL: 2 * time.Minute, BundleRefresh: time.Second})
	require.NoError(t, h.auth.Prepare(context.Background()))
	first := h.current(t)
	// Enough failures for the backoff to pass a minute, far over the
	// refresh interval.
	h.up.set(func(u *fakeUpstream) { u.failMints = 10 })
	h.run(t)

	for range 2000 {
		h.after.next(t).fire(h.clock)
		if x, err := h.auth.Current(); err == nil && x != first {
			break
		}
	}
	h.after.next(t)
	require.NotSame(t, first, h.current(t))
	mints, bundles := h.up.counts()
	require.Equal(t, 12, mints)
	require.Greater(t, bundles, 60, "the bundle kept being refreshed while renewal failed")
}

// While renewals fail, the old intermediate keeps signing until it expires.
func TestAuthorityRenewalFailureKeepsIntermediate(t *testing.T) {
	h := newAuthHarness(t, AuthorityConfig{TTL: 2 * time.Minute, BundleRefresh: time.Hour})
	require.NoError(t, h.auth.Prepare(context.Background()))
	first := h.current(t)
	h.up.set(func(u *fakeUpstream) { u.failMints = 2 })
	h.run(t)
	h.after.next(t).fire(h.clock) // half-life: fails
	h.after.next(t).fire(h.clock) // retry: fails
	require.Same(t, first, h.current(t))
	h.after.next(t).fire(h.clock) // retry: succeeds
	h.after.next(t)
	require.NotSame(t, first, h.current(t))
}

func TestAuthorityRunStops(t *testing.T) {
	h := newAuthHarness(t, AuthorityConfig{})
	require.NoError(t, h.auth.Prepare(context.Background()))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.auth.Run(ctx) }()
	h.after.next(t) // Run is waiting
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not stop on cancel")
	}
}

// Real timers: Run with the default After and Clock renews a lapsed
// intermediate at once and stops on cancel.
func TestAuthorityRunRealTimers(t *testing.T) {
	root, err := upstream.NewSelfSigned(upstream.SelfSignedConfig{Dir: t.TempDir(), TrustDomain: testTD.Name()})
	require.NoError(t, err)
	rotated := make(chan struct{}, 10)
	a, err := NewAuthority(AuthorityConfig{
		TrustDomain: testTD, Upstream: root, TTL: time.Minute, Name: "real",
		OnRotate: func(*X509CA) { rotated <- struct{}{} },
	})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	select {
	case <-rotated:
	case <-time.After(10 * time.Second):
		t.Fatal("no intermediate minted")
	}
	_, err = a.Current()
	require.NoError(t, err)
	cancel()
	require.NoError(t, <-done)
}
