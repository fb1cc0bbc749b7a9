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

// keySet caches the keys of one issuer. It fetches when the set was never
// loaded, when it is older than refresh, or when a token names an unknown
// kid; fetches are at least minRefetch apart, and callers that arrive while
// a fetch runs wait for it and share its result.
type keySet struct {
	source     keySource
	clock      func() time.Time
	log        *slog.Logger
	refresh    time.Duration
	minRefetch time.Duration

	// sem is held by the one caller that is fetching.
	sem chan struct{}

	mu        sync.RWMutex
	keys      []jose.JSONWebKey
	loaded    bool      // keys were fetched successfully at least once
	fetchedAt time.Time // last successful fetch
	triedAt   time.Time // end of the last attempt, successful or not
	attempts  uint64    // completed attempts
	lastErr   error     // error of the last attempt, nil on success
}

type keySetState struct {
	keys      []jose.JSONWebKey
	loaded    bool
	fetchedAt time.Time
	triedAt   time.Time
	attempts  uint64
	lastErr   error
}

func (s *keySet) state() keySetState {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return keySetState{s.keys, s.loaded, s.fetchedAt, s.triedAt, s.attempts, s.lastErr}
}

// keysFor returns the keys that may have signed a token with this kid (all
// keys when kid is empty). Errors wrap ErrUnavailable (no keys ever loaded,
// or ctx ended while waiting for a fetch) or ErrInvalidToken (unknown kid).
func (s *keySet) keysFor(ctx context.Context, kid string) ([]jose.JSONWebKey, error) {
	st := s.state()
	now := s.clock()
	stale := st.loaded && now.Sub(st.fetchedAt) >= s.refresh
	if st.loaded {
		if keys := matchKeys(st.keys, kid); len(keys) > 0 {
			if stale {
				// Refresh in passing, but never make a caller with a known
				// key wait for someone else's fetch.
				s.tryFetch(ctx, st.attempts)
			}
			return keys, nil
		}
	}
	// Never loaded, or unknown kid: one shared, rate-limited fetch.
	if !s.rateLimited(st, now) {
		if err := s.fetchShared(ctx, st.attempts); err != nil {
			return nil, err
		}
		st = s.state()
	}
	if !st.loaded {
		if st.lastErr == nil {
			return nil, fmt.Errorf("%w: key set not loaded", ErrUnavailable)
		}
		return nil, fmt.Errorf("%w: key set not loaded: %w", ErrUnavailable, st.lastErr)
	}
	if keys := matchKeys(st.keys, kid); len(keys) > 0 {
		return keys, nil
	}
	return nil, fmt.Errorf("%w: unknown key id", ErrInvalidToken)
}

// rateLimited reports whether the last attempt was too recent to try again.
func (s *keySet) rateLimited(st keySetState, now time.Time) bool {
	return st.attempts > 0 && now.Sub(st.triedAt) < s.minRefetch
}

// fetchShared fetches unless another caller completed an attempt since the
// caller saw attempts == seen; in that case it shares that result.
func (s *keySet) fetchShared(ctx context.Context, seen uint64) error {
	select {
	case s.sem <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("%w: waiting for key set fetch: %w", ErrUnavailable, ctx.Err())
	}
	defer func() { <-s.sem }()
	if st := s.state(); st.attempts != seen || s.rateLimited(st, s.clock()) {
		return nil
	}
	s.fetch(ctx)
	return nil
}

// tryFetch fetches when no fetch is running and the rate limit allows it.
func (s *keySet) tryFetch(ctx context.Context, seen uint64) {
	select {
	case s.sem <- struct{}{}:
	default:
		return
	}
	defer func() { <-s.sem }()
	if st := s.state(); st.attempts != seen || s.rateLimited(st, s.clock()) {
		return
	}
	s.fetch(ctx)
}

// refreshNow fetches now, regardless of the rate limit.
func (s *keySet) refreshNow(ctx context.Context) error {
	select {
	case s.sem <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("%w: waiting for key set fetch: %w", ErrUnavailable, ctx.Err())
	}
	defer func() { <-s.sem }()
	if err := s.fetch(ctx); err != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return nil
}

// fetch loads the key set; the caller holds sem. An attempt that failed
// because ctx ended is not recorded, so that waiting callers try again.
func (s *keySet) fetch(ctx context.Context) error {
	raw, err := s.source(ctx)
	var keys []jose.JSONWebKey
	if err == nil {
		keys, err = parseKeySet(raw, s.log)
	}
	if err != nil && ctx.Err() != nil {
		return err
	}
	now := s.clock()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.attempts++
	s.triedAt = now
	s.lastErr = err
	if err != nil {
		s.log.Warn("fetch key set failed", "error", err, "keys_loaded", s.loaded)
		return err
	}
	if !s.loaded || !sameKeyIDs(s.keys, keys) {
		s.log.Info("key set loaded", "keys", len(keys))
	}
	s.keys, s.loaded, s.fetchedAt = keys, true, now
	return nil
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
