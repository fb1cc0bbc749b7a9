package tokens

import (
	"context"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// maxKeys bounds how many keys of a key set are kept.
const maxKeys = 64

// minRSABits is the smallest RSA key accepted from a key set.
const minRSABits = 2048

// keySource returns the raw JWKS document.
type keySource func(ctx context.Context) ([]byte, error)

// keySet caches the keys of one issuer (one cluster) and isolates its
// callers from a slow or failing key endpoint:
//
//   - at most one fetch is in flight, bounded by fetchTimeout, and it runs
//     on its own goroutine so that a caller giving up does not abort it;
//   - a caller waits for a fetch only when the set was never loaded or the
//     token names an unknown kid, and only while the endpoint is not known
//     to be failing: after a failed attempt, callers are answered at once
//     (Unavailable, or the keys still held) and the next attempt starts in
//     the background no sooner than minRefetch later (the negative cache);
//   - a caller with a known kid never waits: a stale set is refreshed in
//     the background;
//   - keys kept through failing refreshes are used for at most maxAge after
//     the last successful fetch; then the cluster answers ErrKeysTooOld
//     until a fetch succeeds (a set that merely went unused that long is
//     fetched again before it is used).
type keySet struct {
	source       keySource
	clock        func() time.Time
	log          *slog.Logger
	refresh      time.Duration
	minRefetch   time.Duration
	maxAge       time.Duration
	fetchTimeout time.Duration

	mu        sync.Mutex
	keys      []jose.JSONWebKey
	loaded    bool          // keys were fetched successfully at least once
	fetchedAt time.Time     // last successful fetch
	triedAt   time.Time     // end of the last attempt, successful or not
	attempts  uint64        // completed attempts
	lastErr   error         // error of the last attempt, nil on success
	inflight  chan struct{} // closed when the fetch in flight ends; nil when none
}

type keySetState struct {
	keys      []jose.JSONWebKey
	loaded    bool
	fetchedAt time.Time
	attempts  uint64
	lastErr   error
}

func (s *keySet) stateLocked() keySetState {
	return keySetState{s.keys, s.loaded, s.fetchedAt, s.attempts, s.lastErr}
}

// keysFor returns the keys that may have signed a token with this kid (all
// keys when kid is empty). Errors wrap ErrUnavailable (no keys loaded, the
// endpoint failing, or ctx ended while waiting for a fetch), ErrKeysTooOld
// or ErrInvalidToken (unknown kid).
func (s *keySet) keysFor(ctx context.Context, kid string) ([]jose.JSONWebKey, error) {
	now := s.clock()
	s.mu.Lock()
	st := s.stateLocked()
	tooOld := st.loaded && now.Sub(st.fetchedAt) > s.maxAge
	if tooOld && st.lastErr != nil {
		s.startLocked(now)
		s.mu.Unlock()
		return nil, s.tooOld(st, now)
	}
	if st.loaded && !tooOld {
		if keys := matchKeys(st.keys, kid); len(keys) > 0 {
			if now.Sub(st.fetchedAt) >= s.refresh {
				s.startLocked(now) // in the background: this caller does not wait
			}
			s.mu.Unlock()
			return keys, nil
		}
	}
	// Never loaded, unknown kid, or keys too old after a quiet spell.
	if st.lastErr != nil {
		// The endpoint is failing: answer now, retry in the background.
		s.startLocked(now)
		s.mu.Unlock()
		return nil, unavailable(st)
	}
	done := s.startLocked(now) // the fetch in flight, or nil when rate-limited
	s.mu.Unlock()
	if done != nil {
		select {
		case <-done:
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: waiting for key set fetch: %w", ErrUnavailable, ctx.Err())
		}
		s.mu.Lock()
		st = s.stateLocked()
		s.mu.Unlock()
	}
	switch {
	case st.loaded && st.lastErr != nil && now.Sub(st.fetchedAt) > s.maxAge:
		return nil, s.tooOld(st, now)
	case !st.loaded || st.lastErr != nil:
		return nil, unavailable(st)
	}
	if keys := matchKeys(st.keys, kid); len(keys) > 0 {
		return keys, nil
	}
	return nil, fmt.Errorf("%w: unknown key id", ErrInvalidToken)
}

func (s *keySet) tooOld(st keySetState, now time.Time) error {
	return fmt.Errorf("%w: last successful fetch %s ago (max age %s): %w",
		ErrKeysTooOld, now.Sub(st.fetchedAt).Round(time.Second), s.maxAge, st.lastErr)
}

// unavailable is the error for a set that cannot answer.
func unavailable(st keySetState) error {
	switch {
	case st.lastErr == nil:
		return fmt.Errorf("%w: key set not loaded", ErrUnavailable)
	case st.loaded:
		return fmt.Errorf("%w: key set refresh failing: %w", ErrUnavailable, st.lastErr)
	default:
		return fmt.Errorf("%w: key set not loaded: %w", ErrUnavailable, st.lastErr)
	}
}

// startLocked starts a fetch unless one is in flight or the last attempt
// ended less than minRefetch ago, and returns the channel closed when the
// fetch in flight ends (nil when none was started or running). s.mu is
// held.
func (s *keySet) startLocked(now time.Time) <-chan struct{} {
	if s.inflight != nil {
		return s.inflight
	}
	if s.attempts > 0 && now.Sub(s.triedAt) < s.minRefetch {
		return nil
	}
	done := make(chan struct{})
	s.inflight = done
	go s.run(done)
	return done
}

// run does one fetch, bounded by fetchTimeout, and records it. The
// goroutine ends within fetchTimeout (the source honours its context).
func (s *keySet) run(done chan struct{}) {
	ctx, cancel := context.WithTimeout(context.Background(), s.fetchTimeout)
	defer cancel()
	s.fetch(ctx)
	s.mu.Lock()
	s.inflight = nil
	s.mu.Unlock()
	close(done)
}

// refreshNow fetches now, regardless of the rate limit (or waits for the
// fetch in flight), and returns the attempt's error wrapping
// ErrUnavailable.
func (s *keySet) refreshNow(ctx context.Context) error {
	s.mu.Lock()
	done := s.inflight
	if done == nil {
		done = make(chan struct{})
		s.inflight = done
		go s.run(done)
	}
	s.mu.Unlock()
	select {
	case <-done:
	case <-ctx.Done():
		return fmt.Errorf("%w: waiting for key set fetch: %w", ErrUnavailable, ctx.Err())
	}
	s.mu.Lock()
	err := s.lastErr
	s.mu.Unlock()
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return nil
}

// fetch loads the key set and records the attempt.
func (s *keySet) fetch(ctx context.Context) {
	raw, err := s.source(ctx)
	var keys []jose.JSONWebKey
	if err == nil {
		keys, err = parseKeySet(raw, s.log)
	}
	if err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		err = fmt.Errorf("no answer within %s: %w", s.fetchTimeout, err)
	}
	now := s.clock()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.attempts++
	s.triedAt = now
	s.lastErr = err
	if err != nil {
		s.log.Warn("fetch key set failed", "error", err, "keys_loaded", s.loaded)
		return
	}
	if !s.loaded || !sameKeyIDs(s.keys, keys) {
		s.log.Info("key set loaded", "keys", len(keys))
	}
	s.keys, s.loaded, s.fetchedAt = keys, true, now
}

// matchKeys returns the keys with this kid; every key for an empty kid.
func matchKeys(keys []jose.JSONWebKey, kid string) []jose.JSONWebKey {
	if kid == "" {
		return keys
	}
	var out []jose.JSONWebKey
	for _, k := range keys {
		if k.KeyID == kid {
			out = append(out, k)
		}
	}
	return out
}

func sameKeyIDs(a, b []jose.JSONWebKey) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].KeyID != b[i].KeyID {
			return false
		}
	}
	return true
}

// privateParams are JWK members that carry private or symmetric key
// material; a published key set must have none.
type privateParams struct {
	D, P, Q, Dp, Dq, Qi, K, Priv json.RawMessage
}

// parseKeySet parses a JWKS document and keeps the usable public signature
// keys. Keys it cannot use are skipped (and logged); a set with no usable
// key is an error.
func parseKeySet(raw []byte, log *slog.Logger) ([]jose.JSONWebKey, error) {
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		return nil, fmt.Errorf("parse key set: %w", err)
	}
	var keys []jose.JSONWebKey
	for i, rawKey := range doc.Keys {
		if len(keys) == maxKeys {
			log.Warn("key set has too many keys, ignoring the rest", "max", maxKeys)
			break
		}
		k, err := parseKey(rawKey)
		if err != nil {
			log.Warn("skipping key in key set", "index", i, "reason", err.Error())
			continue
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, errors.New("key set has no usable signature key")
	}
	return keys, nil
}

func parseKey(raw json.RawMessage) (jose.JSONWebKey, error) {
	var priv privateParams
	if err := json.Unmarshal(raw, &priv); err != nil {
		return jose.JSONWebKey{}, fmt.Errorf("parse key: %w", err)
	}
	if priv.D != nil || priv.P != nil || priv.Q != nil || priv.Dp != nil || priv.Dq != nil ||
		priv.Qi != nil || priv.K != nil || priv.Priv != nil {
		return jose.JSONWebKey{}, errors.New("key has private or symmetric material")
	}
	var k jose.JSONWebKey
	if err := k.UnmarshalJSON(raw); err != nil {
		return jose.JSONWebKey{}, fmt.Errorf("parse key: %w", err)
	}
	if !k.IsPublic() || !k.Valid() {
		return jose.JSONWebKey{}, errors.New("not a public key")
	}
	if k.Use != "" && k.Use != "sig" {
		return jose.JSONWebKey{}, fmt.Errorf("key use %q is not sig", k.Use)
	}
	if rk, ok := k.Key.(*rsa.PublicKey); ok && rk.N.BitLen() < minRSABits {
		return jose.JSONWebKey{}, fmt.Errorf("rsa key shorter than %d bits", minRSABits)
	}
	return k, nil
}
