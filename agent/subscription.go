package agent

import (
	"errors"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

type subscription struct {
	m    *Manager
	e    *entry
	ch   chan struct{}
	stop func() bool // stops the context.AfterFunc that closes it
}

func (s *subscription) Updates() <-chan struct{} { return s.ch }

func (s *subscription) SVID() (*x509svid.SVID, error) {
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	if errors.Is(s.e.err, ErrCredentialExpired) {
		return nil, s.e.err
	}
	if s.e.svid != nil && s.m.cfg.Clock().Before(s.e.svid.Certificates[0].NotAfter) {
		return s.e.svid, nil
	}
	return nil, s.e.err
}

func (s *subscription) Bundles() *x509bundle.Set { return s.m.bundles.Load() }

// Close ends the subscription; it is called again, harmlessly, when the
// context given to Subscribe ends.
func (s *subscription) Close() {
	s.m.mu.Lock()
	stop := s.stop
	if _, ok := s.e.subs[s]; ok {
		delete(s.e.subs, s)
		if len(s.e.subs) == 0 {
			s.e.idleAt = s.m.cfg.Clock()
			if s.e.workload.Token != "" && s.e.svid == nil && errors.Is(s.e.err, ErrDenied) && s.m.entries[s.e.key] == s.e {
				// A refused token's entry is of no use to anyone: drop it
				// now rather than after IdleTimeout, so forged tokens
				// leave nothing behind.
				delete(s.m.entries, s.e.key)
				s.m.dirty = true
			}
		}
	}
	s.m.mu.Unlock()
	stop()
}

func (s *subscription) notify() {
	select {
	case s.ch <- struct{}{}:
	default:
	}
}

// notify wakes every subscriber of e; the caller holds the manager lock.
func (e *entry) notify() {
	for s := range e.subs {
		s.notify()
	}
}
