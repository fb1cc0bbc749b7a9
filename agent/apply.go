package agent

import (
	"crypto/ecdsa"
	"crypto/x509"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/lanyard-id/lanyard/internal/backoff"
	cav1 "github.com/lanyard-id/lanyard/proto/lanyard/ca/v1"
)

// Backoff bounds for renewals.
const (
	retryBase  = 500 * time.Millisecond
	retryLimit = time.Minute
)

// apply stores the results of one batch. RPC failures back off every entry
// of the batch; per-entry failures back off that entry; refusals that no
// retry can fix become the entry's error (unless it still has a valid SVID,
// which keeps being served).
func (m *Manager) apply(batch []*entry, keys []*ecdsa.PrivateKey, results []*cav1.SVIDResult, rpcErr error) {
	var failed []renewFailure // logged once the lock is released
	defer func() {
		for _, f := range failed {
			m.cfg.Logger.Warn("renew SVID", "spiffe_id", f.id.String(), "code", f.code.String(), "message", f.msg, "failures", f.failures)
		}
	}()
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.cfg.Clock()
	if rpcErr == nil && len(results) != len(batch) {
		// A Signer that answers short must not crash the agent.
		rpcErr = status.Errorf(codes.Internal, "CA answered %d results for %d requests", len(results), len(batch))
	}
	for i, e := range batch {
		e.inFlight = false
		var code codes.Code
		var msg string
		var svid *x509svid.SVID
		if rpcErr != nil {
			st, _ := status.FromError(rpcErr)
			code, msg = st.Code(), st.Message()
		} else {
			r := results[i]
			code, msg = codes.Code(r.GetCode()), r.GetMessage()
			if code == codes.OK {
				var err error
				if svid, err = svidFromProto(r.GetSvid(), keys[i]); err != nil {
					code, msg = codes.Internal, err.Error()
				} else if svid.ID != e.workload.ID {
					code, msg = codes.Internal, fmt.Sprintf("CA issued %s, asked for %s", svid.ID, e.workload.ID)
				} else if !now.Before(svid.Certificates[0].NotAfter) {
					// Clock skew: renewing it at once would loop.
					code, msg = codes.Internal, fmt.Sprintf("CA issued an SVID that expired at %s", svid.Certificates[0].NotAfter)
				}
			}
		}
		if code == codes.OK {
			e.svid, e.err, e.failures = svid, nil, 0
			e.renewAt = renewalTime(svid.Certificates[0], now)
			m.dirty = true
			m.cfg.Metrics.Rotations.Inc()
			e.notify()
			continue
		}
		e.failures++
		m.cfg.Metrics.RenewFailures.WithLabelValues(code.String()).Inc()
		switch code {
		case codes.Unauthenticated:
			if e.workload.Token != "" && e.svid != nil {
				// The token was accepted before and no longer works; its
				// workload has a newer one. End the streams so that they
				// come back with it, while the old SVID is still valid.
				e.renewAt = now.Add(backoff.Exponential(e.failures+4, retryBase, retryLimit))
				e.err = fmt.Errorf("%w: %s", ErrCredentialExpired, msg)
				e.notify()
				break
			}
			fallthrough
		case codes.PermissionDenied, codes.InvalidArgument:
			// Not fixed by retrying soon: the workload must present a new
			// token (a new entry) or an operator must act. Back off hard.
			e.renewAt = now.Add(backoff.Exponential(e.failures+4, retryBase, retryLimit))
			if e.svid == nil || !now.Before(e.svid.Certificates[0].NotAfter) {
				e.svid = nil
				e.err = fmt.Errorf("%w: %s: %s", ErrDenied, code, msg)
				m.dirty = true
				e.notify()
			}
		default:
			e.renewAt = now.Add(backoff.Exponential(e.failures, retryBase, retryLimit))
		}
		failed = append(failed, renewFailure{id: e.workload.ID, code: code, msg: msg, failures: e.failures})
	}
}

// renewFailure is one failed renewal, for the log.
type renewFailure struct {
	id       spiffeid.ID
	code     codes.Code
	msg      string
	failures int
}

// renewalTime is half-life ± 10 %, counted from when the agent got the
// certificate (got) when that is after NotBefore: the CA backdates
// NotBefore for clock skew, which would otherwise put the half-life of a
// short-lived SVID in the past and renew it in a loop. For an SVID whose
// receipt time is unknown (loaded from disk) pass its NotBefore.
func renewalTime(leaf *x509.Certificate, got time.Time) time.Time {
	start := leaf.NotBefore
	if got.After(start) && got.Before(leaf.NotAfter) {
		start = got
	}
	return start.Add(jitter(leaf.NotAfter.Sub(start)/2, 0.1))
}

// currentToken is the token a renewal of w sends: its TokenSource's current
// one when it has a source that can be read, else the token it came with.
func currentToken(w Workload) string {
	if w.Token == "" || w.TokenSource == nil {
		return w.Token
	}
	if tok, err := w.TokenSource(); err == nil && tok != "" {
		return tok
	}
	return w.Token
}
