package agent

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"

	"github.com/lanyard-id/lanyard/ca"
	"github.com/lanyard-id/lanyard/internal/clocktest"
	cav1 "github.com/lanyard-id/lanyard/proto/lanyard/ca/v1"
)

var testTokens = map[string]ca.Subject{
	"token-web-1": {Namespace: "shop", ServiceAccount: "web", PodName: "web-1"},
	"token-web-2": {Namespace: "shop", ServiceAccount: "web", PodName: "web-2"},
	"token-db":    {Namespace: "shop", ServiceAccount: "db"},
}

func TestManagerSubscribeServesVerifiedSVID(t *testing.T) {
	for _, tt := range []struct {
		name string
		w    Workload
	}{
		{"attested", attestedWorkload("shop", "api")},
		{"token", tokenWorkload("token-db", "shop", "db")},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				c := newTestCA(t, nil, nil)
				signer := newFakeSigner(c, testTokens)
				m := newTestManager(t, c, signer, nil)

				sub, err := m.Subscribe(context.Background(), tt.w)
				require.NoError(t, err)
				defer sub.Close()
				select {
				case <-sub.Updates():
				case <-time.After(5 * time.Second):
					t.Fatal("Updates did not fire")
				}
				s := waitSVID(t, sub, nil, 5*time.Second)
				requireValidSVID(t, s, tt.w.ID, sub.Bundles(), time.Now())
				require.Equal(t, 1, c.Recorder.Len(), "the SVID served is the one recorded")
				_, ok := sub.Bundles().Get(testTD)
				require.True(t, ok)
			})
		})
	}
}

func TestManagerBatchesConcurrentSubscribes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newTestCA(t, nil, nil)
		signer := newFakeSigner(c, nil)
		m := newTestManager(t, c, signer, nil)

		const n = 100
		subs := make([]Subscription, n)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				<-start
				sub, err := m.Subscribe(context.Background(), attestedWorkload("batch", fmt.Sprintf("sa-%d", i)))
				if err != nil {
					t.Error(err)
					return
				}
				subs[i] = sub
			})
		}
		close(start)
		wg.Wait()
		for i, sub := range subs {
			require.NotNil(t, sub)
			s := waitSVID(t, sub, nil, 10*time.Second)
			requireValidSVID(t, s, workloadID("batch", fmt.Sprintf("sa-%d", i)), m.Bundles(), time.Now())
			sub.Close()
		}
		sizes := signer.callSizes()
		t.Logf("batch sizes: %v", sizes)
		total := 0
		for _, s := range sizes {
			total += s
		}
		require.Equal(t, n, total, "every entry is asked for exactly once: %v", sizes)
		require.LessOrEqual(t, len(sizes), 10, "batch sizes %v", sizes)
	})
}

func TestManagerRotatesAtHalfLife(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newTestCA(t, nil, nil)
		signer := newFakeSigner(c, nil)
		reg := prometheus.NewRegistry()
		metrics := NewMetrics(reg)
		const ttl = 2 * time.Second
		m := newTestManager(t, c, signer, func(cfg *ManagerConfig) { cfg.TTL = ttl; cfg.Metrics = metrics })

		w := attestedWorkload("shop", "api")
		sub, err := m.Subscribe(context.Background(), w)
		require.NoError(t, err)
		defer sub.Close()
		first := waitSVID(t, sub, nil, 5*time.Second)
		got := time.Now()
		left := first.Certificates[0].NotAfter.Sub(got) // X.509 times are whole seconds

		second := waitSVID(t, sub, first, 3*ttl)
		renewedAfter := time.Since(got)
		requireValidSVID(t, second, w.ID, m.Bundles(), time.Now())
		require.NotEqual(t, serialOf(first), serialOf(second))
		require.False(t, first.PrivateKey.Public().(*ecdsa.PublicKey).Equal(second.PrivateKey.Public()), "a rotation makes a new key")
		// Half of the time the SVID had left, ± 10 %, with slack for a slow
		// machine (the bug this guards against renewed within milliseconds).
		require.GreaterOrEqual(t, renewedAfter, left*25/100, "renewed long before half-life")
		require.Less(t, renewedAfter, left, "not renewed before expiry")
		require.GreaterOrEqual(t, testutil.ToFloat64(metrics.Rotations), 2.0)
		require.LessOrEqual(t, signer.numCalls(), 3, "no renewal loop")
	})
}

func TestManagerRenewalScheduledAtHalfOfRemainingLife(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// The CA backdates NotBefore for clock skew (a quarter of a 20 s
		// SVID's life, 5 s); it must still be renewed after about 10 s, not
		// at once.
		c := newTestCA(t, nil, nil)
		signer := newFakeSigner(c, nil)
		const ttl = 20 * time.Second
		m := newTestManager(t, c, signer, func(cfg *ManagerConfig) { cfg.TTL = ttl })

		w := attestedWorkload("shop", "api")
		sub, err := m.Subscribe(context.Background(), w)
		require.NoError(t, err)
		defer sub.Close()
		s := waitSVID(t, sub, nil, 5*time.Second)
		require.LessOrEqual(t, s.Certificates[0].NotBefore, time.Now().Add(-ttl/4), "the CA backdates NotBefore")
		e, ok := entryOf(m, w)
		require.True(t, ok)
		wait := time.Until(e.renewAt)
		require.Greater(t, wait, ttl*40/100, "renewal at %s from now", wait)
		require.Less(t, wait, ttl*56/100, "renewal at %s from now", wait)
	})
}

func TestRenewalTimeJitter(t *testing.T) {
	now := time.Now().Truncate(time.Second)
	for _, tt := range []struct {
		name      string
		notBefore time.Time
		got       time.Time // when the agent got it
	}{
		{"issued now", now, now},
		{"backdated", now.Add(-10 * time.Second), now},
		{"loaded later from disk", now, now.Add(-time.Hour)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			leaf := &x509.Certificate{NotBefore: tt.notBefore, NotAfter: now.Add(time.Hour)}
			start := tt.got
			if start.Before(tt.notBefore) {
				start = tt.notBefore
			}
			life := leaf.NotAfter.Sub(start)
			lo, hi := start.Add(life*45/100), start.Add(life*55/100)
			minSeen, maxSeen := leaf.NotAfter, start
			var sum time.Duration
			const samples = 2000
			for range samples {
				r := renewalTime(leaf, tt.got)
				require.False(t, r.Before(lo), "%s before %s", r, lo)
				require.False(t, r.After(hi), "%s after %s", r, hi)
				if r.Before(minSeen) {
					minSeen = r
				}
				if r.After(maxSeen) {
					maxSeen = r
				}
				sum += r.Sub(start)
			}
			// Jittered both ways, centred on the half-life.
			require.Less(t, minSeen.Sub(start), life*47/100)
			require.Greater(t, maxSeen.Sub(start), life*53/100)
			mean := sum / samples
			require.InDelta(t, float64(life/2), float64(mean), float64(life/100))
		})
	}
}

func TestManagerKeepsServingThroughOutage(t *testing.T) {
	for _, code := range []codes.Code{codes.Unavailable, codes.ResourceExhausted} {
		t.Run(code.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				clock := clocktest.New(time.Now())
				c := newTestCA(t, clock.Now, nil)
				signer := newFakeSigner(c, nil)
				reg := prometheus.NewRegistry()
				metrics := NewMetrics(reg)
				m := newTestManager(t, c, signer, func(cfg *ManagerConfig) {
					cfg.TTL, cfg.Clock, cfg.After, cfg.Metrics = time.Hour, clock.Now, clock.After, metrics
				})
				w := attestedWorkload("shop", "api")
				sub, err := m.Subscribe(context.Background(), w)
				require.NoError(t, err)
				defer sub.Close()
				passTime(clock, m.cfg.BatchWindow)
				first := waitSVID(t, sub, nil, 5*time.Second)
				require.Equal(t, 1, signer.numCalls())

				// The CA goes away; the SVID passes its half-life.
				signer.failRPC(code)
				clock.Advance(35 * time.Minute)
				synctest.Wait()
				require.Equal(t, 2, signer.numCalls())

				// Retries back off (≥ 250 ms, then ≥ 500 ms): over half a
				// second, at most two more calls.
				passTime(clock, 500*time.Millisecond)
				require.LessOrEqual(t, signer.numCalls(), 4, "retry loop")
				s, err := sub.SVID()
				require.NoError(t, err)
				require.Equal(t, serialOf(first), serialOf(s), "the cached SVID is still served")

				// Drive more failures (each step is past the longest backoff)
				// until the backoff is long.
				for m.failures(w) < 7 {
					n := signer.numCalls()
					clock.Advance(time.Minute)
					synctest.Wait()
					require.Greater(t, signer.numCalls(), n)
				}
				e, _ := entryOf(m, w)
				require.False(t, e.inFlight)
				require.Greater(t, e.renewAt.Sub(clock.Now()), 10*time.Second, "backoff grows")
				require.Less(t, e.renewAt.Sub(clock.Now()), time.Minute+time.Second, "backoff is bounded")
				s, err = sub.SVID()
				require.NoError(t, err)
				require.Equal(t, serialOf(first), serialOf(s), "the cached SVID is still served")
				require.GreaterOrEqual(t, testutil.ToFloat64(metrics.RenewFailures.WithLabelValues(code.String())), 7.0)

				// The CA is back: the renewal happens at once, not after the backoff.
				signer.failRPC(codes.OK)
				m.CAReachable()
				passTime(clock, m.cfg.BatchWindow)
				second := waitSVID(t, sub, first, time.Second)
				requireValidSVID(t, second, w.ID, m.Bundles(), clock.Now())
				e, _ = entryOf(m, w)
				require.Zero(t, e.failures)

				// A held SVID that expires during an outage is no longer served.
				signer.failRPC(code)
				clock.Advance(2 * time.Hour)
				synctest.Wait()
				s, err = sub.SVID()
				require.NoError(t, err)
				require.Nil(t, s, "an expired SVID is never served")
			})
		})
	}
}

// TestManagerRenewsAfterSuspend: renewals are scheduled on the wall clock.
// A machine suspended past an SVID's expiry (the wall clock jumps, the
// monotonic timers do not fire) renews within wallCheck of waking, not
// after the monotonic time that was left.
func TestManagerRenewsAfterSuspend(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		clock := clocktest.New(time.Now())
		c := newTestCA(t, clock.Now, nil)
		signer := newFakeSigner(c, nil)
		m := newTestManager(t, c, signer, func(cfg *ManagerConfig) {
			cfg.TTL, cfg.Clock, cfg.After = time.Hour, clock.Now, clock.After
		})
		w := attestedWorkload("shop", "api")
		sub, err := m.Subscribe(context.Background(), w)
		require.NoError(t, err)
		defer sub.Close()
		passTime(clock, m.cfg.BatchWindow)
		first := waitSVID(t, sub, nil, 5*time.Second)

		next, ok := clock.Next()
		require.True(t, ok)
		require.LessOrEqual(t, next, wallCheck, "the manager re-checks its deadlines at least every %s", wallCheck)
		clock.Jump(2 * time.Hour) // suspended past the SVID's expiry
		s, err := sub.SVID()
		require.NoError(t, err)
		require.Nil(t, s, "the expired SVID is not served")

		clock.Advance(next)
		synctest.Wait()
		passTime(clock, m.cfg.BatchWindow)
		second := waitSVID(t, sub, first, time.Second)
		requireValidSVID(t, second, w.ID, m.Bundles(), clock.Now())
		require.Equal(t, 2, signer.numCalls())
	})
}

func (m *Manager) failures(w Workload) int {
	e, _ := entryOf(m, w)
	return e.failures
}

func TestManagerDeniedNewWorkload(t *testing.T) {
	for _, tt := range []struct {
		name  string
		w     Workload
		setup func(*fakeSigner)
		code  codes.Code
	}{
		{"permission denied", attestedWorkload("shop", "api"), func(f *fakeSigner) { f.failEntries("shop/api", codes.PermissionDenied) }, codes.PermissionDenied},
		{"unknown token", tokenWorkload("forged", "shop", "web"), func(*fakeSigner) {}, codes.Unauthenticated},
		{"invalid argument", attestedWorkload("shop", "api"), func(f *fakeSigner) { f.failEntries("*", codes.InvalidArgument) }, codes.InvalidArgument},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				clock := clocktest.New(time.Now())
				c := newTestCA(t, clock.Now, nil)
				signer := newFakeSigner(c, testTokens)
				tt.setup(signer)
				m := newTestManager(t, c, signer, func(cfg *ManagerConfig) { cfg.Clock, cfg.After = clock.Now, clock.After })
				sub, err := m.Subscribe(context.Background(), tt.w)
				require.NoError(t, err)
				defer sub.Close()
				passTime(clock, m.cfg.BatchWindow)

				deadline := time.After(5 * time.Second)
				for {
					s, err := sub.SVID()
					if err != nil {
						require.Nil(t, s)
						require.ErrorIs(t, err, ErrDenied)
						require.Contains(t, err.Error(), tt.code.String())
						break
					}
					require.Nil(t, s)
					select {
					case <-sub.Updates():
					case <-deadline:
						t.Fatal("no refusal reported")
					}
				}
				// Refusals are retried slowly: nothing within the next moments.
				e, _ := entryOf(m, tt.w)
				require.Greater(t, e.renewAt.Sub(clock.Now()), 3*time.Second)
				passTime(clock, 3*time.Second)
				require.Equal(t, 1, signer.numCalls())

				// A new subscriber with the same credential sees the refusal too.
				sub2, err := m.Subscribe(context.Background(), tt.w)
				require.NoError(t, err)
				defer sub2.Close()
				_, err = sub2.SVID()
				require.ErrorIs(t, err, ErrDenied)
			})
		})
	}
}

func TestManagerDeniedRenewalKeepsValidSVID(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		clock := clocktest.New(time.Now())
		c := newTestCA(t, clock.Now, nil)
		signer := newFakeSigner(c, nil)
		m := newTestManager(t, c, signer, func(cfg *ManagerConfig) { cfg.TTL, cfg.Clock, cfg.After = time.Hour, clock.Now, clock.After })
		w := attestedWorkload("shop", "api")
		sub, err := m.Subscribe(context.Background(), w)
		require.NoError(t, err)
		defer sub.Close()
		passTime(clock, m.cfg.BatchWindow)
		first := waitSVID(t, sub, nil, 5*time.Second)

		signer.failEntries("shop/api", codes.PermissionDenied)
		clock.Advance(40 * time.Minute)
		synctest.Wait()
		require.Equal(t, 1, m.failures(w))
		s, err := sub.SVID()
		require.NoError(t, err, "a still-valid SVID is served until it expires")
		require.Equal(t, serialOf(first), serialOf(s))

		clock.Advance(21 * time.Minute)
		synctest.Wait()
		require.Equal(t, 2, m.failures(w))
		s, err = sub.SVID()
		require.Nil(t, s)
		require.ErrorIs(t, err, ErrDenied)

		// An operator allows it again: the next (slow) retry serves it.
		signer.failEntries("shop/api", codes.OK)
		clock.Advance(2 * time.Minute)
		synctest.Wait()
		s, err = sub.SVID()
		require.NoError(t, err)
		require.NotNil(t, s)
		requireValidSVID(t, s, w.ID, m.Bundles(), clock.Now())
	})
}

func TestManagerSameIDDifferentCredentials(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newTestCA(t, nil, nil)
		signer := newFakeSigner(c, testTokens)
		m := newTestManager(t, c, signer, nil)

		ws := []Workload{
			tokenWorkload("token-web-1", "shop", "web"),
			tokenWorkload("token-web-2", "shop", "web"),
			attestedWorkload("shop", "web"),
		}
		var svids []*x509svid.SVID
		for _, w := range ws {
			sub, err := m.Subscribe(context.Background(), w)
			require.NoError(t, err)
			defer sub.Close()
			s := waitSVID(t, sub, nil, 5*time.Second)
			requireValidSVID(t, s, w.ID, m.Bundles(), time.Now())
			svids = append(svids, s)
		}
		for i := range svids {
			for j := range i {
				require.NotEqual(t, serialOf(svids[i]), serialOf(svids[j]))
				require.False(t, svids[i].PrivateKey.Public().(*ecdsa.PublicKey).Equal(svids[j].PrivateKey.Public()),
					"credentials %d and %d share a key", i, j)
			}
		}
		// The same token subscribing again shares its own entry, never another's.
		again, err := m.Subscribe(context.Background(), ws[1])
		require.NoError(t, err)
		defer again.Close()
		s, err := again.SVID()
		require.NoError(t, err)
		require.Equal(t, serialOf(svids[1]), serialOf(s))
	})
}

func TestManagerSubscribeValidation(t *testing.T) {
	c := newTestCA(t, nil, nil)
	signer := newFakeSigner(c, nil)
	m, err := NewManager(ManagerConfig{Signer: signer, TrustDomain: testTD})
	require.NoError(t, err)
	for _, tt := range []struct {
		name string
		w    Workload
	}{
		{"zero ID", Workload{Token: "t"}},
		{"zero ID attested", Workload{Attested: &Attested{Attestor: "unix", Namespace: "a", ServiceAccount: "b"}}},
		{"no credential", Workload{ID: workloadID("a", "b")}},
		{"both credentials", Workload{ID: workloadID("a", "b"), Token: "t", Attested: &Attested{Attestor: "unix", Namespace: "a", ServiceAccount: "b"}}},
		{"foreign trust domain", Workload{ID: spiffeid.RequireFromString("spiffe://evil.example/ns/a/sa/b"), Token: "t"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			sub, err := m.Subscribe(context.Background(), tt.w)
			require.ErrorIs(t, err, ErrNotIdentified)
			require.Nil(t, sub)
		})
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	require.Empty(t, m.entries)
	require.Zero(t, signer.numCalls())

	_, err = NewManager(ManagerConfig{TrustDomain: testTD})
	require.Error(t, err)
	_, err = NewManager(ManagerConfig{Signer: signer})
	require.Error(t, err)
}

func TestManagerDropsIdleEntries(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newTestCA(t, nil, nil)
		signer := newFakeSigner(c, nil)
		reg := prometheus.NewRegistry()
		metrics := NewMetrics(reg)
		m := newTestManager(t, c, signer, func(cfg *ManagerConfig) { cfg.IdleTimeout, cfg.Metrics = 100*time.Millisecond, metrics })

		idle, busy := attestedWorkload("shop", "idle"), attestedWorkload("shop", "busy")
		subIdle, err := m.Subscribe(context.Background(), idle)
		require.NoError(t, err)
		subBusy, err := m.Subscribe(context.Background(), busy)
		require.NoError(t, err)
		defer subBusy.Close()
		waitSVID(t, subIdle, nil, 5*time.Second)
		waitSVID(t, subBusy, nil, 5*time.Second)
		require.Eventually(t, func() bool { return testutil.ToFloat64(metrics.SVIDsHeld) == 2 }, 5*time.Second, 5*time.Millisecond)

		subIdle.Close()
		subIdle.Close() // idempotent
		require.Eventually(t, func() bool { _, ok := entryOf(m, idle); return !ok }, 5*time.Second, 10*time.Millisecond)
		_, ok := entryOf(m, busy)
		require.True(t, ok, "an entry with a subscriber is kept")
		require.Eventually(t, func() bool { return testutil.ToFloat64(metrics.SVIDsHeld) == 1 }, 5*time.Second, 5*time.Millisecond)

		// Coming back fetches a new SVID.
		n := signer.numCalls()
		sub, err := m.Subscribe(context.Background(), idle)
		require.NoError(t, err)
		defer sub.Close()
		waitSVID(t, sub, nil, 5*time.Second)
		require.Greater(t, signer.numCalls(), n)
	})
}

func TestManagerSetBundleNotifiesEverySubscriber(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newTestCA(t, nil, nil)
		signer := newFakeSigner(c, nil)
		m := newTestManager(t, c, signer, nil)
		var subs []Subscription
		for i := range 3 {
			sub, err := m.Subscribe(context.Background(), attestedWorkload("shop", fmt.Sprintf("sa-%d", i)))
			require.NoError(t, err)
			defer sub.Close()
			waitSVID(t, sub, nil, 5*time.Second)
			subs = append(subs, sub)
		}
		drain := func() {
			for _, s := range subs {
				select {
				case <-s.Updates():
				default:
				}
			}
		}
		drain()

		fed := x509bundle.FromX509Authorities(spiffeid.RequireTrustDomainFromString("partner.example"), []*x509.Certificate{selfSignedCert(t)})
		m.SetBundle(fed)
		for i, s := range subs {
			select {
			case <-s.Updates():
			case <-time.After(time.Second):
				t.Fatalf("subscriber %d not notified", i)
			}
			got, ok := s.Bundles().Get(fed.TrustDomain())
			require.True(t, ok)
			require.True(t, got.Equal(fed))
			_, ok = s.Bundles().Get(testTD)
			require.True(t, ok, "the own bundle is kept")
		}

		// The same bundle again changes nothing and wakes no one.
		m.SetBundle(fed.Clone())
		for i, s := range subs {
			select {
			case <-s.Updates():
				t.Fatalf("subscriber %d woken for an unchanged bundle", i)
			default:
			}
		}
	})
}

func TestManagerSetBundleConcurrent(t *testing.T) {
	c := newTestCA(t, nil, nil)
	m, err := NewManager(ManagerConfig{Signer: newFakeSigner(c, nil), TrustDomain: testTD})
	require.NoError(t, err)
	root := selfSignedCert(t)
	var wg sync.WaitGroup
	const n = 50
	for i := range n {
		wg.Go(func() {
			td := spiffeid.RequireTrustDomainFromString(fmt.Sprintf("td%d.example", i))
			m.SetBundle(x509bundle.FromX509Authorities(td, []*x509.Certificate{root}))
		})
	}
	wg.Wait()
	require.Equal(t, n, m.Bundles().Len(), "no bundle update is lost")
}

func TestManagerMetrics(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newTestCA(t, nil, nil)
		signer := newFakeSigner(c, nil)
		reg := prometheus.NewRegistry()
		metrics := NewMetrics(reg)
		const ttl = 10 * time.Minute
		m := newTestManager(t, c, signer, func(cfg *ManagerConfig) { cfg.TTL, cfg.Metrics = ttl, metrics })
		sub, err := m.Subscribe(context.Background(), attestedWorkload("shop", "api"))
		require.NoError(t, err)
		defer sub.Close()
		waitSVID(t, sub, nil, 5*time.Second)

		require.Eventually(t, func() bool { return testutil.ToFloat64(metrics.OutageBudget) > 0 }, 5*time.Second, 5*time.Millisecond)
		budget := testutil.ToFloat64(metrics.OutageBudget)
		require.LessOrEqual(t, budget, ttl.Seconds())
		require.Greater(t, budget, (ttl - time.Minute).Seconds())
		require.Equal(t, 1.0, testutil.ToFloat64(metrics.Rotations))
		require.Equal(t, 1.0, testutil.ToFloat64(metrics.SVIDsHeld))

		// Every metric is registered and well formed.
		metrics.SVIDsServed.WithLabelValues("sds").Inc()
		metrics.Streams.WithLabelValues("sds").Inc()
		metrics.RenewFailures.WithLabelValues("Unavailable").Add(0)
		n, err := testutil.GatherAndCount(reg)
		require.NoError(t, err)
		require.Equal(t, 7, n)
		problems, err := testutil.GatherAndLint(reg)
		require.NoError(t, err)
		require.Empty(t, problems)
	})
}

// shortSigner answers fewer results than requests.
type shortSigner struct{ calls int }

func (s *shortSigner) BatchSign(context.Context, []*cav1.SVIDRequest) ([]*cav1.SVIDResult, error) {
	s.calls++
	return nil, nil
}

func TestManagerSurvivesShortAnswer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newTestCA(t, nil, nil)
		m := newTestManager(t, c, &shortSigner{}, nil)
		w := attestedWorkload("shop", "api")
		sub, err := m.Subscribe(context.Background(), w)
		require.NoError(t, err)
		defer sub.Close()
		require.Eventually(t, func() bool { return m.failures(w) == 1 }, 5*time.Second, 5*time.Millisecond)
		s, err := sub.SVID()
		require.NoError(t, err, "a bad answer is retried, not a refusal")
		require.Nil(t, s)
	})
}

// selfSignedCert is a throwaway CA certificate for federated bundles.
func selfSignedCert(t testing.TB) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return cert
}

// A token the CA accepted before and now refuses (it expired) ends the
// subscription with ErrCredentialExpired at once, while the old SVID is
// still valid, so that the workload reconnects with its current token.
func TestManagerTokenNoLongerAccepted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newTestCA(t, nil, nil)
		signer := newFakeSigner(c, testTokens)
		m := newTestManager(t, c, signer, func(cfg *ManagerConfig) { cfg.TTL = 2 * time.Second })
		w := tokenWorkload("token-web-1", "shop", "web")
		sub, err := m.Subscribe(context.Background(), w)
		require.NoError(t, err)
		defer sub.Close()
		first := waitSVID(t, sub, nil, 5*time.Second)
		signer.failEntries("*", codes.Unauthenticated)
		require.Eventually(t, func() bool {
			_, err := sub.SVID()
			return errors.Is(err, ErrCredentialExpired)
		}, 5*time.Second, 10*time.Millisecond)
		require.True(t, time.Now().Before(first.Certificates[0].NotAfter), "refused before the old SVID expired")
	})
}

// Renewals due a little later ride along with a due batch, so that the
// ±10 % jitter does not split one agent's renewals into many calls.
func TestManagerDueCoalescesRenewals(t *testing.T) {
	c := newTestCA(t, nil, nil)
	// Not running: the test calls due itself.
	m, err := NewManager(ManagerConfig{Signer: newFakeSigner(c, testTokens), TrustDomain: testTD})
	require.NoError(t, err)
	leaf := &x509.Certificate{NotBefore: time.Now().Add(-30 * time.Minute), NotAfter: time.Now().Add(30 * time.Minute)}
	svid := &x509svid.SVID{Certificates: []*x509.Certificate{leaf}}
	now := time.Now()
	add := func(name string, renewIn time.Duration, failures int) *entry {
		w := attestedWorkload("shop", name)
		e := &entry{key: name, workload: w, svid: svid, subs: map[*subscription]struct{}{{}: {}}, renewAt: now.Add(renewIn), failures: failures}
		m.mu.Lock()
		m.entries[name] = e
		m.mu.Unlock()
		return e
	}
	// Lifetime 1h: up to a minute early may ride along.
	due := add("due", -time.Second, 0)
	soon := add("soon", 50*time.Second, 0)
	later := add("later", 5*time.Minute, 0)
	failing := add("failing", 10*time.Second, 2) // backing off: not pulled forward
	batch, _ := m.due()
	require.ElementsMatch(t, []*entry{due, soon}, batch)
	require.False(t, later.inFlight)
	require.False(t, failing.inFlight)
	m.release(batch)

	// Nothing due: nothing is pulled forward either.
	due.renewAt = now.Add(time.Hour)
	batch, next := m.due()
	require.Empty(t, batch)
	require.Greater(t, next, time.Duration(0))
}

// TestManagerSubscriptionEndsWithContext: a subscription whose context
// ends is closed, so that the entry can go idle without a Close.
func TestManagerSubscriptionEndsWithContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newTestCA(t, nil, nil)
		m := newTestManager(t, c, newFakeSigner(c, nil), nil)
		w := attestedWorkload("shop", "api")
		ctx, cancel := context.WithCancel(context.Background())
		sub, err := m.Subscribe(ctx, w)
		require.NoError(t, err)
		waitSVID(t, sub, nil, 5*time.Second)
		e, _ := entryOf(m, w)
		require.Len(t, e.subs, 1)

		cancel()
		synctest.Wait()
		e, _ = entryOf(m, w)
		require.Empty(t, e.subs)
		require.False(t, e.idleAt.IsZero(), "the entry is idle")
		sub.Close() // and Close after that is harmless
	})
}
