package ca

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lanyard-id/lanyard/storage"
)

// fakeControlStore is an in-memory ControlStore; fail makes reads fail.
type fakeControlStore struct {
	mu    sync.Mutex
	ctl   storage.Controls
	reads int // Controls calls
	fail  error
}

func (f *fakeControlStore) ControlSequence(context.Context) (int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ctl.Sequence, f.fail
}

func (f *fakeControlStore) Controls(context.Context, time.Time) (storage.Controls, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reads++
	return f.ctl, f.fail
}

func (f *fakeControlStore) set(c storage.Controls) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ctl = c
}

func TestControlsPollReloadsOnSequenceChange(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := &fakeControlStore{ctl: storage.Controls{Sequence: 1, DeniedIdentities: []string{"spiffe://example.org/ns/a/sa/b"}}}
		c, err := NewControls(ControlsConfig{Store: st, Poll: time.Second})
		require.NoError(t, err)
		require.False(t, c.IdentityDenied("spiffe://example.org/ns/a/sa/b"), "nothing enforced before the first load")
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error)
		go func() { done <- c.Run(ctx) }()
		synctest.Wait()
		require.True(t, c.IdentityDenied("spiffe://example.org/ns/a/sa/b"))
		require.EqualValues(t, 1, c.Sequence())

		// Unchanged sequence: no reload.
		time.Sleep(3 * time.Second)
		synctest.Wait()
		require.Equal(t, 1, st.reads)

		st.set(storage.Controls{Sequence: 2, BannedAgents: []string{"spiffe://example.org/lanyard/agent/c/n"}, RevokedAgentSerials: []string{"ab"}})
		time.Sleep(time.Second)
		synctest.Wait()
		require.Equal(t, 2, st.reads)
		require.False(t, c.IdentityDenied("spiffe://example.org/ns/a/sa/b"))
		require.True(t, c.AgentBanned("spiffe://example.org/lanyard/agent/c/n"))
		require.True(t, c.SVIDRevoked("ab"))

		// A store outage keeps the last controls in force.
		st.mu.Lock()
		st.fail = errors.New("down")
		st.mu.Unlock()
		time.Sleep(2 * time.Second)
		synctest.Wait()
		require.True(t, c.AgentBanned("spiffe://example.org/lanyard/agent/c/n"))
		cancel()
		require.NoError(t, <-done)
	})
}

func TestSignWorkloadRefusesAdminDenied(t *testing.T) {
	st := &fakeControlStore{ctl: storage.Controls{Sequence: 1, DeniedIdentities: []string{workloadURI("default", "api")}}}
	controls, err := NewControls(ControlsConfig{Store: st})
	require.NoError(t, err)
	require.NoError(t, controls.Reload(t.Context()))
	tc := newTestCA(t, caOptions{cfg: func(c *Config) { c.Denied = controls }})
	_, err = tc.ca.SignWorkload(t.Context(), workloadReq(t, keyP256, withURIs(workloadURI("default", "api"))))
	require.ErrorIs(t, err, ErrPermissionDenied)
	require.Empty(t, tc.rec.Records(), "nothing signed, nothing recorded")

	st.set(storage.Controls{Sequence: 2})
	require.NoError(t, controls.Reload(t.Context()))
	_, err = tc.ca.SignWorkload(t.Context(), workloadReq(t, keyP256, withURIs(workloadURI("default", "api"))))
	require.NoError(t, err)
}
