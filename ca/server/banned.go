package server

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/lanyard-id/lanyard/storage"
)

// bannedTTL is how long an agent's ban status is cached: a ban takes effect
// on every replica within this time, without a store read per call.
const bannedTTL = 5 * time.Second

// bannedCache remembers whether agents are banned in the store.
type bannedCache struct {
	store storage.Store
	clock func() time.Time
	mu    sync.Mutex
	m     map[spiffeid.ID]bannedEntry
}

type bannedEntry struct {
	banned  bool
	expires time.Time
}

func newBannedCache(st storage.Store, clock func() time.Time) *bannedCache {
	return &bannedCache{store: st, clock: clock, m: map[spiffeid.ID]bannedEntry{}}
}

// banned reports whether id is banned, reading the store at most once per
// bannedTTL per agent. A store error is returned, never taken as "not banned".
func (c *bannedCache) banned(ctx context.Context, id spiffeid.ID) (bool, error) {
	now := c.clock()
	c.mu.Lock()
	e, ok := c.m[id]
	c.mu.Unlock()
	if ok && now.Before(e.expires) {
		return e.banned, nil
	}
	rec, err := c.store.GetAgent(ctx, id.String())
	switch {
	case errors.Is(err, storage.ErrNotFound):
	case err != nil:
		return false, fmt.Errorf("look up agent: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) > 100_000 { // bounded: drop everything rather than grow
		clear(c.m)
	}
	c.m[id] = bannedEntry{banned: rec.Banned, expires: now.Add(bannedTTL)}
	return rec.Banned, nil
}

// forget drops id so that its next call reads the store again.
func (c *bannedCache) forget(id spiffeid.ID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, id)
}
