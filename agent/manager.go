package agent

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/protobuf/types/known/durationpb"

	cav1 "github.com/lanyard-id/lanyard/proto/lanyard/ca/v1"
)

// Signer signs batches of workload CSRs (*Client).
type Signer interface {
	BatchSign(ctx context.Context, reqs []*cav1.SVIDRequest) ([]*cav1.SVIDResult, error)
}

// ManagerConfig configures the SVID cache and its rotation.
type ManagerConfig struct {
	Signer      Signer
	TrustDomain spiffeid.TrustDomain
	// TTL requested for workload SVIDs (0: the CA's default).
	TTL time.Duration
	// BatchMax bounds one BatchSignSVIDs call (default 256); BatchWindow is
	// how long a due renewal waits for company (default 5ms).
	BatchMax    int
	BatchWindow time.Duration
	// MaxInFlight bounds concurrent BatchSignSVIDs calls (default 4).
	MaxInFlight int
	// IdleTimeout drops an SVID nobody has subscribed to for this long
	// (default 10m).
	IdleTimeout time.Duration
	// CacheFile, when set, keeps SVIDs on disk (0600) so that a restarted
	// agent serves still-valid ones at once during a CA outage.
	CacheFile string
	Metrics   *Metrics
	// Clock is the wall clock renewals are scheduled on (default: the
	// wall clock without monotonic reading, so that a suspended machine
	// renews as soon as it wakes). After waits as time.After does (the
	// default); tests inject both to drive Run without sleeping.
	Clock  func() time.Time
	After  func(time.Duration) <-chan time.Time
	Logger *slog.Logger
}

// Manager holds the workloads' SVIDs: it fetches them on first
// subscription, renews them at half-life ± 10 %, batches CSRs, backs off
// when the CA is unavailable, and keeps serving valid SVIDs during an
// outage. Keys are made here; the CA never sees them.
type Manager struct {
	cfg     ManagerConfig
	bundles atomic.Pointer[x509bundle.Set]
	kick    chan struct{}

	mu      sync.Mutex
	entries map[string]*entry
	dirty   bool // disk cache out of date
}

// entry is one credential's SVID: (identity, credential) → SVID.
type entry struct {
	key      string
	workload Workload
	svid     *x509svid.SVID
	err      error // terminal refusal, when svid is nil
	subs     map[*subscription]struct{}
	idleAt   time.Time // when the last subscriber left
	renewAt  time.Time // next attempt
	inFlight bool
	failures int
}

// NewManager validates cfg.
func NewManager(cfg ManagerConfig) (*Manager, error) {
	if cfg.Signer == nil || cfg.TrustDomain.IsZero() {
		return nil, errors.New("manager: signer and trust domain are required")
	}
	if cfg.BatchMax <= 0 {
		cfg.BatchMax = 256
	}
	if cfg.BatchWindow == 0 {
		cfg.BatchWindow = 5 * time.Millisecond
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = 4
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = 10 * time.Minute
	}
	if cfg.Clock == nil {
		cfg.Clock = wallNow
	}
	if cfg.After == nil {
		cfg.After = time.After
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = newUnregisteredMetrics()
	}
	m := &Manager{cfg: cfg, kick: make(chan struct{}, 1), entries: map[string]*entry{}}
	m.bundles.Store(x509bundle.NewSet())
	if cfg.CacheFile != "" {
		m.loadCache()
	}
	return m, nil
}

// SetBundle replaces the bundle of b's trust domain and notifies every
// subscriber at once.
func (m *Manager) SetBundle(b *x509bundle.Bundle) {
	// The lock makes the read-modify-write atomic: concurrent calls for
	// different trust domains must not lose one another's bundle.
	m.mu.Lock()
	defer m.mu.Unlock()
	old := m.bundles.Load()
	if cur, ok := old.Get(b.TrustDomain()); ok && cur.Equal(b) {
		return
	}
	set := x509bundle.NewSet(old.Bundles()...)
	set.Add(b)
	m.bundles.Store(set)
	m.dirty = true
	for _, e := range m.entries {
		e.notify()
	}
}

// Bundles returns the trust bundles.
func (m *Manager) Bundles() *x509bundle.Set { return m.bundles.Load() }

// CAReachable resets every backoff and retries at once: the CA is back.
func (m *Manager) CAReachable() {
	m.mu.Lock()
	now := m.cfg.Clock()
	for _, e := range m.entries {
		if e.failures > 0 && e.err == nil {
			e.failures, e.renewAt = 0, now
		}
	}
	m.mu.Unlock()
	m.wake()
}

// Workloads is how many workload identities the manager serves: cached
// SVIDs and those being fetched (the agent reports it to the CA on each
// call, so the first request for a workload already counts it).
func (m *Manager) Workloads() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.entries)
}

// Subscribe returns a live view of w's SVID, fetching it if needed. The
// subscription ends when ctx does, or at Close, whichever comes first.
func (m *Manager) Subscribe(ctx context.Context, w Workload) (Subscription, error) {
	if w.ID.IsZero() || (w.Token == "") == (w.Attested == nil) {
		return nil, fmt.Errorf("%w: workload needs an ID and exactly one credential", ErrNotIdentified)
	}
	if !w.ID.MemberOf(m.cfg.TrustDomain) {
		return nil, fmt.Errorf("%w: %s is not in trust domain %s", ErrNotIdentified, w.ID, m.cfg.TrustDomain)
	}
	k := entryKey(w)
	s := &subscription{m: m, ch: make(chan struct{}, 1)}
	m.mu.Lock()
	e, ok := m.entries[k]
	if !ok {
		e = &entry{key: k, subs: map[*subscription]struct{}{}, renewAt: m.cfg.Clock()}
		m.entries[k] = e
	}
	e.workload = w // a cached entry learns its credential again
	if now := m.cfg.Clock(); e.svid == nil && e.err == nil && e.renewAt.After(now) && e.failures == 0 {
		e.renewAt = now
	}
	e.subs[s] = struct{}{}
	s.e = e
	s.stop = context.AfterFunc(ctx, s.Close)
	m.mu.Unlock()
	s.notify()
	m.wake()
	return s, nil
}

// entryKey binds an SVID to the exact credential the CA accepted: a token
// entry is never served to a caller with another token, so one workload can
// never receive another's key.
func entryKey(w Workload) string {
	if w.Token != "" {
		sum := sha256.Sum256([]byte(w.Token))
		return w.ID.String() + "|token|" + hex.EncodeToString(sum[:16])
	}
	a := w.Attested
	return w.ID.String() + "|" + a.Attestor + "|" + a.Namespace + "/" + a.ServiceAccount + "|" + a.PodUID
}

func (m *Manager) wake() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// Run renews due SVIDs in batches until ctx ends. Deadlines are on the
// wall clock and re-checked at least every wallCheck.
func (m *Manager) Run(ctx context.Context) error {
	sem := make(chan struct{}, m.cfg.MaxInFlight)
	var wg sync.WaitGroup
	// Last, once the batches in flight are done: keep what they brought.
	defer m.persist()
	defer wg.Wait()
	for {
		next := m.schedule(ctx, sem, &wg)
		m.persist()
		m.updateGauges()
		select {
		case <-ctx.Done():
			return nil
		case <-m.kick:
			// Give concurrent subscribers a moment to join the batch.
			select {
			case <-ctx.Done():
				return nil
			case <-m.cfg.After(m.cfg.BatchWindow):
			}
		case <-m.cfg.After(min(max(next, m.cfg.BatchWindow), wallCheck)):
		}
	}
}

// schedule sends every due entry in batches and returns the time until the
// next one is due.
func (m *Manager) schedule(ctx context.Context, sem chan struct{}, wg *sync.WaitGroup) time.Duration {
	for {
		batch, next := m.due()
		if len(batch) == 0 {
			return next
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			m.release(batch)
			return 0
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			m.sign(ctx, batch)
		}()
	}
}

// due marks up to BatchMax due entries in flight and returns them, or the
// wait until the next due entry. When something is due, healthy entries
// due a little later (within 2 % of their lifetime, at most a minute) ride
// along: renewal jitter spreads one agent's renewals over seconds, and
// renewing some of them slightly early keeps them in one batch.
func (m *Manager) due() ([]*entry, time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.cfg.Clock()
	next := time.Hour
	var batch, soon []*entry
	for k, e := range m.entries {
		if len(e.subs) == 0 && !e.idleAt.IsZero() && now.Sub(e.idleAt) > m.cfg.IdleTimeout {
			delete(m.entries, k)
			m.dirty = true
			continue
		}
		if e.inFlight || e.workload.ID.IsZero() || (e.workload.Token == "" && e.workload.Attested == nil) {
			continue // loaded from disk: waits for its workload to come back
		}
		if len(e.subs) == 0 && e.svid == nil {
			continue
		}
		if wait := e.renewAt.Sub(now); wait > 0 {
			next = min(next, wait)
			if e.svid != nil && e.failures == 0 && wait <= aheadOf(e.svid.Certificates[0]) {
				soon = append(soon, e)
			}
			continue
		}
		if len(batch) < m.cfg.BatchMax {
			e.inFlight = true
			batch = append(batch, e)
		} else {
			next = 0
		}
	}
	if len(batch) > 0 {
		for _, e := range soon[:min(len(soon), m.cfg.BatchMax-len(batch))] {
			e.inFlight = true
			batch = append(batch, e)
		}
	}
	return batch, next
}

// aheadOf is how early a renewal may ride along with a due batch.
func aheadOf(leaf *x509.Certificate) time.Duration {
	return min(leaf.NotAfter.Sub(leaf.NotBefore)/50, time.Minute)
}

func (m *Manager) release(batch []*entry) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, e := range batch {
		e.inFlight = false
	}
}

// sign makes a key and CSR per entry, sends one batch and applies results.
func (m *Manager) sign(ctx context.Context, batch []*entry) {
	keys := make([]*ecdsa.PrivateKey, len(batch))
	reqs := make([]*cav1.SVIDRequest, 0, len(batch))
	m.mu.Lock()
	works := make([]Workload, len(batch))
	for i, e := range batch {
		works[i] = e.workload
	}
	m.mu.Unlock()
	for i, w := range works {
		w.Token = currentToken(w)
		key, csr, err := newCSR(w.ID)
		if err != nil {
			m.cfg.Logger.Error("make workload key", "error", err)
			m.release(batch)
			return
		}
		keys[i] = key
		r := &cav1.SVIDRequest{Id: fmt.Sprint(i), Csr: csr}
		if m.cfg.TTL > 0 {
			r.Ttl = durationpb.New(m.cfg.TTL)
		}
		if w.Token != "" {
			r.Caller = &cav1.SVIDRequest_Token{Token: w.Token}
		} else {
			a := w.Attested
			r.Caller = &cav1.SVIDRequest_Attested{Attested: &cav1.AttestedWorkload{
				Attestor: a.Attestor, Namespace: a.Namespace, ServiceAccount: a.ServiceAccount, PodName: a.PodName, PodUid: a.PodUID,
			}}
		}
		reqs = append(reqs, r)
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	results, err := m.cfg.Signer.BatchSign(cctx, reqs)
	if err != nil && ctx.Err() != nil {
		m.release(batch) // shutting down: not a renewal failure
		return
	}
	m.apply(batch, keys, results, err)
	// Run sleeps on a deadline computed while this batch was in flight:
	// wake it so that retries, persistence and gauges follow at once.
	m.wake()
}

func newCSR(id spiffeid.ID) (*ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	u, err := url.Parse(id.String())
	if err != nil {
		return nil, nil, err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{u}}, key)
	return key, csr, err
}
