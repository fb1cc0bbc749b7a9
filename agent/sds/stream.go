package sds

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/lanyard-id/lanyard/agent"
)

// stream is the state of one StreamSecrets call. Only run's goroutine
// touches it.
type stream struct {
	ss      grpc.BidiStreamingServer[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]
	sub     agent.Subscription
	caller  spiffeid.ID
	log     *slog.Logger
	metrics *Metrics

	subscribed bool     // a request has been accepted
	names      []string // current subscription (empty: everything)
	nonce      string   // nonce of the last response sent; "" before the first
	version    string   // version of the last response sent
	acked      string   // version the client last ACKed
	reported   string   // last logged pending/omitted summary
}

// run handles requests and subscription updates until the stream ends.
func (st *stream) run(ctx context.Context) error {
	reqs := make(chan *discoveryv3.DiscoveryRequest)
	recvErr := make(chan error, 1)
	// The receiver ends when the stream does: returning from the handler
	// cancels ctx, which ends Recv.
	go func() {
		for {
			req, err := st.ss.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case reqs <- req:
			case <-ctx.Done():
				return
			}
		}
	}()

	for {
		select {
		case <-ctx.Done():
			return agent.Status(st.log, "stream ended", ctx.Err())
		case err := <-recvErr:
			if errors.Is(err, io.EOF) || status.Code(err) == codes.Canceled {
				return nil
			}
			return err
		case req := <-reqs:
			if err := st.onRequest(req); err != nil {
				return err
			}
		case <-st.sub.Updates():
			if err := st.push(false); err != nil {
				return err
			}
		}
	}
}

// onRequest applies one DiscoveryRequest.
func (st *stream) onRequest(req *discoveryv3.DiscoveryRequest) error {
	if err := checkTypeURL(req); err != nil {
		return agent.Status(st.log, "wrong type_url", err)
	}
	if st.nonce != "" {
		// A reply to a response: it must answer the latest one. An older
		// nonce means the client has not seen our latest response yet;
		// it will answer that one, so this request is dropped whole,
		// resource names included.
		if req.GetResponseNonce() != st.nonce {
			st.log.Debug("stale nonce; request ignored", "nonce", req.GetResponseNonce(), "expect", st.nonce)
			return nil
		}
		if req.GetErrorDetail() != nil || req.GetVersionInfo() != st.version {
			// NACK. Logged and counted; the rejected version is not sent
			// again (push sends only a different version), so a client
			// that cannot apply it does not loop.
			st.metrics.nacked()
			st.log.Warn("client rejected secrets",
				"version", st.version, "nonce", st.nonce, "kept_version", req.GetVersionInfo(),
				"names", st.names, "error_code", req.GetErrorDetail().GetCode(),
				"error", req.GetErrorDetail().GetMessage())
		} else {
			st.acked = req.GetVersionInfo()
			st.log.Debug("ack", "version", st.acked)
		}
	}
	names, err := normalize(req.GetResourceNames())
	if err != nil {
		return agent.Status(st.log, "request refused", err)
	}
	if st.subscribed && sameSet(names, st.names) {
		return nil // ACK or NACK of the current subscription: nothing new to send
	}
	if st.subscribed {
		st.log.Debug("subscription changed", "names", names, "was", st.names)
	}
	st.subscribed, st.names = true, names
	return st.push(true)
}

// push sends the subscribed resources: on the first request and on every
// subscription change (changed: the client may have dropped a resource it
// subscribes to again), and on a rotation or bundle change when the
// content differs from the last response. It sends nothing while nothing
// is available (a pending first SVID is never an empty certificate).
func (st *stream) push(changed bool) error {
	if !st.subscribed {
		return nil // nothing requested yet; the first request will push
	}
	svid, err := st.sub.SVID()
	if err != nil {
		return agent.Status(st.log, "identity refused", err)
	}
	a, err := resolve(st.names, view{caller: st.caller, svid: svid, bundles: st.sub.Bundles()})
	if err != nil {
		return agent.Status(st.log, "build secrets", fmt.Errorf("%w: %w", agent.ErrInternal, err))
	}
	st.report(a)
	if len(a.resources) == 0 || (!changed && a.version == st.version) {
		return nil
	}
	resp := &discoveryv3.DiscoveryResponse{
		VersionInfo: a.version,
		Resources:   a.resources,
		TypeUrl:     SecretTypeURL,
		Nonce:       rand.Text(),
	}
	if err := st.ss.Send(resp); err != nil {
		return err
	}
	st.version, st.nonce = resp.VersionInfo, resp.Nonce
	st.metrics.pushed()
	st.metrics.served(a)
	st.log.Debug("pushed", "version", resp.VersionInfo, "nonce", resp.Nonce, "names", a.served)
	return nil
}

// report logs names not served, once per change.
func (st *stream) report(a answer) {
	summary := strings.Join(a.pending, "\x00") + "\x01" + strings.Join(a.omitted, "\x00")
	if summary == st.reported {
		return
	}
	st.reported = summary
	if len(a.omitted) > 0 {
		st.log.Warn("resources not served", "names", a.omitted,
			"reason", "unknown name, another workload's identity, or a trust domain without a bundle")
	}
	if len(a.pending) > 0 {
		st.log.Info("resources pending", "names", a.pending)
	}
}

// sameSet tells whether a and b hold the same names (both normalized).
func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for _, n := range a {
		if !slices.Contains(b, n) {
			return false
		}
	}
	return true
}
