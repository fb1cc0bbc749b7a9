// Package agenttest is the one fake of the node agent's identity source
// (agent.Identities and agent.Subscription) for the tests of the servers
// that consume it (agent/sds, agent/workloadapi), as go-spiffe's
// internal/test/fakeworkloadapi is for its clients.
//
// Identities hands out subscriptions by SPIFFE ID; an ID nobody set up is
// pending (no SVID yet). Each ID's state is an Identity the test changes
// (Set, Deny, Shutdown…); every open subscription to it is notified, as
// the agent's Manager does.
package agenttest

import (
	"context"
	"sync"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/lanyard-id/lanyard/agent"
)

// Identities implements agent.Identities. It is safe for concurrent use.
type Identities struct {
	mu         sync.Mutex
	byID       map[spiffeid.ID]*Identity
	refused    map[spiffeid.ID]error // what Subscribe reports
	bundles    *x509bundle.Set       // for identities without their own
	subscribed []agent.Workload
	count      map[spiffeid.ID]int
}

// New returns Identities serving ids (nil: none yet).
func New(ids map[spiffeid.ID]*Identity) *Identities {
	f := &Identities{byID: map[spiffeid.ID]*Identity{}, refused: map[spiffeid.ID]error{}, bundles: x509bundle.NewSet(), count: map[spiffeid.ID]int{}}
	for id, i := range ids {
		f.add(id, i)
	}
	return f
}

func (f *Identities) add(id spiffeid.ID, i *Identity) {
	i.mu.Lock()
	i.parent = f
	i.mu.Unlock()
	f.byID[id] = i
}

// Identity returns id's state, pending if it was not set up.
func (f *Identities) Identity(id spiffeid.ID) *Identity {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.identityLocked(id)
}

func (f *Identities) identityLocked(id spiffeid.ID) *Identity {
	i, ok := f.byID[id]
	if !ok {
		i = NewIdentity(nil)
		f.add(id, i)
	}
	return i
}

// Subscribe implements agent.Identities: the subscription ends with ctx
// or at Close.
func (f *Identities) Subscribe(ctx context.Context, w agent.Workload) (agent.Subscription, error) {
	f.mu.Lock()
	f.subscribed = append(f.subscribed, w)
	f.count[w.ID]++
	if err := f.refused[w.ID]; err != nil {
		f.mu.Unlock()
		return nil, err
	}
	i := f.identityLocked(w.ID)
	f.mu.Unlock()
	s := &Subscription{id: i, updates: make(chan struct{}, 1)}
	s.updates <- struct{}{} // as the Manager does: read the state now
	i.mu.Lock()
	i.subs[s] = struct{}{}
	s.stop = context.AfterFunc(ctx, s.Close)
	i.mu.Unlock()
	return s, nil
}

// SetSVID sets id's SVID (nil: pending) and clears its error.
func (f *Identities) SetSVID(id spiffeid.ID, svid *x509svid.SVID) { f.Identity(id).Set(svid, nil) }

// Deny makes id's subscriptions report err (wrapping agent.ErrDenied or
// agent.ErrCredentialExpired) instead of an SVID.
func (f *Identities) Deny(id spiffeid.ID, err error) { f.Identity(id).Set(nil, err) }

// Refuse makes Subscribe for id fail with err.
func (f *Identities) Refuse(id spiffeid.ID, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.refused[id] = err
}

// SetBundles sets the bundles of every identity without its own, and
// notifies every subscription.
func (f *Identities) SetBundles(bundles ...*x509bundle.Bundle) {
	f.mu.Lock()
	f.bundles = x509bundle.NewSet(bundles...)
	f.mu.Unlock()
	f.Poke()
}

// Poke wakes every subscription without changing anything.
func (f *Identities) Poke() {
	for _, i := range f.all() {
		i.Notify()
	}
}

// Live is the number of open subscriptions.
func (f *Identities) Live() int {
	n := 0
	for _, i := range f.all() {
		n += i.Open()
	}
	return n
}

// Subscribed is how many times Subscribe was called for id.
func (f *Identities) Subscribed(id spiffeid.ID) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.count[id]
}

// Workloads are the callers of Subscribe, in order.
func (f *Identities) Workloads() []agent.Workload {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]agent.Workload(nil), f.subscribed...)
}

func (f *Identities) all() []*Identity {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]*Identity, 0, len(f.byID))
	for _, i := range f.byID {
		out = append(out, i)
	}
	return out
}

func (f *Identities) defaultBundles() *x509bundle.Set {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.bundles
}

// Identity is one workload's state.
type Identity struct {
	mu        sync.Mutex
	parent    *Identities
	svid      *x509svid.SVID
	err       error
	bundles   *x509bundle.Set // nil: the parent's
	subs      map[*Subscription]struct{}
	svidCalls chan struct{}
}

// NewIdentity is an identity holding svid, with its own bundles when
// some are given.
func NewIdentity(svid *x509svid.SVID, bundles ...*x509bundle.Bundle) *Identity {
	i := &Identity{svid: svid, subs: map[*Subscription]struct{}{}, svidCalls: make(chan struct{}, 1)}
	if len(bundles) > 0 {
		i.bundles = x509bundle.NewSet(bundles...)
	}
	return i
}

// Set changes the SVID and error (and the bundles, when given), and
// notifies every subscription.
func (i *Identity) Set(svid *x509svid.SVID, err error, bundles ...*x509bundle.Bundle) {
	i.mu.Lock()
	i.svid, i.err = svid, err
	if bundles != nil {
		i.bundles = x509bundle.NewSet(bundles...)
	}
	i.mu.Unlock()
	i.Notify()
}

// Current is the SVID the identity holds now.
func (i *Identity) Current() *x509svid.SVID {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.svid
}

// Notify wakes every subscription without changing anything.
func (i *Identity) Notify() {
	i.mu.Lock()
	defer i.mu.Unlock()
	for s := range i.subs {
		select {
		case s.updates <- struct{}{}:
		default:
		}
	}
}

// Shutdown closes every subscription's Updates channel, as a stopping
// agent may.
func (i *Identity) Shutdown() {
	i.mu.Lock()
	defer i.mu.Unlock()
	for s := range i.subs {
		close(s.updates)
		delete(i.subs, s)
	}
}

// Open is the number of open subscriptions.
func (i *Identity) Open() int {
	i.mu.Lock()
	defer i.mu.Unlock()
	return len(i.subs)
}

// SVIDCalls gets a value (if there is room) on every Subscription.SVID
// call, so a test knows a server has read the state.
func (i *Identity) SVIDCalls() <-chan struct{} { return i.svidCalls }

// Subscription implements agent.Subscription.
type Subscription struct {
	id      *Identity
	updates chan struct{}
	stop    func() bool
}

// Updates implements agent.Subscription.
func (s *Subscription) Updates() <-chan struct{} { return s.updates }

// SVID implements agent.Subscription.
func (s *Subscription) SVID() (*x509svid.SVID, error) {
	s.id.mu.Lock()
	defer s.id.mu.Unlock()
	select {
	case s.id.svidCalls <- struct{}{}:
	default:
	}
	return s.id.svid, s.id.err
}

// Bundles implements agent.Subscription.
func (s *Subscription) Bundles() *x509bundle.Set {
	s.id.mu.Lock()
	b, parent := s.id.bundles, s.id.parent
	s.id.mu.Unlock()
	if b == nil && parent != nil {
		return parent.defaultBundles()
	}
	if b == nil {
		return x509bundle.NewSet()
	}
	return b
}

// Close implements agent.Subscription.
func (s *Subscription) Close() {
	s.id.mu.Lock()
	delete(s.id.subs, s)
	stop := s.stop
	s.id.mu.Unlock()
	stop()
}
