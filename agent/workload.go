package agent

import (
	"context"
	"errors"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// Errors a Subscription reports.
var (
	// ErrNotIdentified: the caller could not be identified (no token, no
	// attestation mapping). Served as codes.PermissionDenied.
	ErrNotIdentified = errors.New("workload could not be identified")
	// ErrDenied: the CA refused this workload's identity for good
	// (PermissionDenied, InvalidArgument, or Unauthenticated for a token
	// that no retry can fix). Served as codes.PermissionDenied.
	ErrDenied = errors.New("identity refused by the CA")
	// ErrCredentialExpired: the token this subscription was made with no
	// longer convinces the CA (it expired or was revoked). The stream ends
	// with codes.Unauthenticated so that the workload reconnects with its
	// current token (Envoy re-reads its token file for every stream); the
	// old SVID stays with the workload until then.
	ErrCredentialExpired = errors.New("workload credential expired, reconnect with a fresh one")
)

// Attested is a workload identified by attestation of the socket peer.
type Attested struct {
	// Attestor that identified it: "unix" or "k8s".
	Attestor       string
	Namespace      string
	ServiceAccount string
	PodName        string
	PodUID         string
}

// Workload is a caller of the agent's socket as identified: by the
// projected token it presented, or by attestation. Exactly one of Token
// and Attested is set.
type Workload struct {
	// ID is the SPIFFE ID the workload asks for: derived from the token's
	// (unverified) claims or from the attested service account. The CA
	// decides; the agent never serves an SVID the CA did not issue for
	// exactly this credential.
	ID spiffeid.ID
	// Token is the projected service-account token (audience "lanyard").
	Token string
	// TokenSource, when set with Token (sidecar mode: the token is the
	// pod's own token file), returns the current token. Renewals ask it
	// first, so that a token file rotated by the kubelet is used by the
	// next renewal and no stream has to fail with the old token first.
	TokenSource func() (string, error)
	// Attested is set when the peer was attested instead.
	Attested *Attested
}

// Subscription is a live view of one workload's SVID and the trust
// bundles. It is how the SDS and Workload API servers consume the agent.
type Subscription interface {
	// Updates receives a value whenever the SVID or a bundle changes
	// (coalesced: one pending value at most). Read SVID and Bundles after.
	Updates() <-chan struct{}
	// SVID is the current SVID with its private key; (nil, nil) while the
	// first one is being fetched; (nil, err) when the CA refused the
	// workload for good (err wraps ErrDenied) or its token stopped working
	// (err wraps ErrCredentialExpired).
	SVID() (*x509svid.SVID, error)
	// Bundles is the trust domain's bundle plus federated ones.
	Bundles() *x509bundle.Set
	// Close ends the subscription; the SVID may be dropped from the cache
	// once no one subscribes to it.
	Close()
}

// Identities hands out subscriptions (*Manager). A subscription ends
// when the context given to Subscribe ends, or at Close.
type Identities interface {
	Subscribe(ctx context.Context, w Workload) (Subscription, error)
}
