package vault

import (
	"context"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/lanyard-id/lanyard/internal/backoff"
)

// Run keeps the login alive until ctx is done: it renews the token with
// the api's LifetimeWatcher and logs in again when a renewal is refused or
// the token reaches its maximum TTL. Failed logins are retried with
// jittered backoff; MintX509CA also logs in on demand, so Run only keeps
// the token fresh between renewals.
func (u *Upstream) Run(ctx context.Context) error {
	failures := 0
	for {
		sec, err := u.ensureLogin(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			failures++
			wait := backoff.Exponential(failures, u.cfg.RetryMin, u.cfg.RetryMax)
			u.cfg.Logger.Warn("vault login failed", "error", err, "failures", failures, "retry_in", wait)
			if !sleep(ctx, wait) {
				return nil
			}
			continue
		}
		failures = 0
		if !u.watch(ctx, sec) {
			return nil
		}
		u.invalidate(sec)
	}
}

// watch renews sec until renewal stops; false when ctx ended.
func (u *Upstream) watch(ctx context.Context, sec *api.Secret) bool {
	if sec.Auth.LeaseDuration == 0 { // a token that never expires
		<-ctx.Done()
		return false
	}
	if !sec.Auth.Renewable {
		// Log in again at two thirds of the token's life.
		return sleep(ctx, time.Duration(sec.Auth.LeaseDuration)*time.Second*2/3)
	}
	w, err := u.client.NewLifetimeWatcher(&api.LifetimeWatcherInput{
		Secret: sec, RenewBehavior: api.RenewBehaviorErrorOnErrors,
	})
	if err != nil {
		u.cfg.Logger.Error("vault token watcher", "error", err)
		return sleep(ctx, u.cfg.RetryMin)
	}
	go w.Start()
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case r := <-w.RenewCh():
			u.renewals.Add(1)
			ttl := time.Duration(0)
			if r != nil && r.Secret != nil && r.Secret.Auth != nil {
				ttl = time.Duration(r.Secret.Auth.LeaseDuration) * time.Second
			}
			u.cfg.Logger.Debug("renewed vault token", "ttl", ttl)
		case err := <-w.DoneCh():
			if err != nil {
				u.cfg.Logger.Warn("vault refused to renew the token; logging in again", "error", err)
			} else {
				u.cfg.Logger.Info("vault token reached its maximum TTL; logging in again")
			}
			return true
		}
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
