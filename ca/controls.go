package ca

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lanyard-id/lanyard/storage"
)

// DefaultControlsPoll is how often Controls reads the store's control
// sequence. A ban, eviction or deny-list change made through another
// replica is enforced here at most this long (plus one store read) later;
// through this replica, at once (Reload).
const DefaultControlsPoll = time.Second

// ControlStore is the part of storage.Store that Controls reads.
type ControlStore interface {
	ControlSequence(ctx context.Context) (int64, error)
	Controls(ctx context.Context, now time.Time) (storage.Controls, error)
}

// ControlsConfig configures Controls.
type ControlsConfig struct {
	Store ControlStore
	// Poll is the interval of control-sequence reads (default
	// DefaultControlsPoll).
	Poll   time.Duration
	Clock  func() time.Time
	Logger *slog.Logger
}

// Controls holds what an admin decided that every replica enforces: the
// identity deny list, banned agents and the serials of evicted agents'
// SVIDs. It is loaded from the store and kept current by Run, which polls
// the store's control sequence and reloads when it moves. Reads are
// lock-free.
type Controls struct {
	cfg    ControlsConfig
	state  atomic.Pointer[controlState]
	reload sync.Mutex // one reload at a time
}

type controlState struct {
	seq      int64
	denied   map[string]struct{}
	banned   map[string]struct{}
	revoked  map[string]struct{}
	loadedAt time.Time
}

// NewControls validates cfg. Nothing is enforced until the first Reload
// (Run does one at once).
func NewControls(cfg ControlsConfig) (*Controls, error) {
	if cfg.Store == nil {
		return nil, errors.New("controls: store is required")
	}
	if cfg.Poll <= 0 {
		cfg.Poll = DefaultControlsPoll
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Controls{cfg: cfg}
	c.state.Store(&controlState{seq: -1})
	return c, nil
}

// Reload reads every control from the store now.
func (c *Controls) Reload(ctx context.Context) error {
	c.reload.Lock()
	defer c.reload.Unlock()
	return c.load(ctx)
}

func (c *Controls) load(ctx context.Context) error {
	now := c.cfg.Clock()
	ctl, err := c.cfg.Store.Controls(ctx, now)
	if err != nil {
		return fmt.Errorf("load controls: %w", err)
	}
	st := &controlState{seq: ctl.Sequence, loadedAt: now,
		denied: set(ctl.DeniedIdentities), banned: set(ctl.BannedAgents), revoked: set(ctl.RevokedAgentSerials)}
	c.state.Store(st)
	return nil
}

func set(xs []string) map[string]struct{} {
	m := make(map[string]struct{}, len(xs))
	for _, x := range xs {
		m[x] = struct{}{}
	}
	return m
}

// Run reloads at once, then polls the control sequence every Poll and
// reloads when it moved, until ctx ends. Store errors are logged and
// retried at the next poll; the last loaded controls stay enforced.
func (c *Controls) Run(ctx context.Context) error {
	t := time.NewTicker(c.cfg.Poll)
	defer t.Stop()
	for {
		if err := c.poll(ctx); err != nil && ctx.Err() == nil {
			c.cfg.Logger.Warn("read admin controls", "error", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (c *Controls) poll(ctx context.Context) error {
	seq, err := c.cfg.Store.ControlSequence(ctx)
	if err != nil {
		return err
	}
	c.reload.Lock()
	defer c.reload.Unlock()
	if seq == c.state.Load().seq {
		return nil
	}
	return c.load(ctx)
}

// Sequence is the control sequence last loaded (-1 before the first load).
func (c *Controls) Sequence() int64 { return c.state.Load().seq }

// IdentityDenied reports whether id is on the deny list.
func (c *Controls) IdentityDenied(id string) bool {
	_, ok := c.state.Load().denied[id]
	return ok
}

// AgentBanned reports whether the agent is banned.
func (c *Controls) AgentBanned(id string) bool {
	_, ok := c.state.Load().banned[id]
	return ok
}

// SVIDRevoked reports whether an agent SVID with this serial (lowercase
// hex) was revoked by an eviction.
func (c *Controls) SVIDRevoked(serial string) bool {
	_, ok := c.state.Load().revoked[serial]
	return ok
}
