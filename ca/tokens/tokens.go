package tokens

import (
	"context"
	"errors"
	"time"
)

// Errors callers branch on; verifiers wrap them with a reason.
var (
	// ErrInvalidToken: malformed, bad signature, wrong algorithm, wrong
	// issuer, unknown key id. Maps to codes.Unauthenticated.
	ErrInvalidToken = errors.New("invalid token")
	// ErrExpired: exp in the past (or nbf/iat in the future beyond leeway).
	// Maps to codes.Unauthenticated.
	ErrExpired = errors.New("token expired or not yet valid")
	// ErrWrongAudience: none of the token's audiences is the expected one.
	// Maps to codes.Unauthenticated.
	ErrWrongAudience = errors.New("token audience not accepted")
	// ErrUnknownCluster: no verifier is configured for the named cluster.
	// Maps to codes.Unauthenticated.
	ErrUnknownCluster = errors.New("unknown cluster")
	// ErrUnavailable: the keys or the TokenReview API could not be reached,
	// so no token can be verified right now. Maps to codes.Unavailable.
	ErrUnavailable = errors.New("token verification unavailable")
	// ErrKeysTooOld: the cluster's key endpoint has failed for longer than
	// the key set's maximum age (JWKSConfig.MaxKeyAge), so the keys kept
	// from the last successful fetch are no longer trusted and no token of
	// that cluster is verified until a fetch succeeds. Maps to
	// codes.Unavailable.
	ErrKeysTooOld = errors.New("cluster keys too old, key endpoint failing")
)

// ServiceAccount is what a verified Kubernetes service-account token says.
type ServiceAccount struct {
	// Cluster is the name of the cluster whose verifier accepted the token.
	Cluster string
	// Issuer is the token's iss claim (empty for TokenReview when unknown).
	Issuer string
	// Namespace and Name identify the service account; UID is its uid.
	Namespace string
	Name      string
	UID       string
	// PodName and PodUID are set when the token is bound to a pod.
	PodName string
	PodUID  string
	// NodeName and NodeUID are set when the token carries the node claim
	// (Kubernetes 1.30+ for pod-bound tokens).
	NodeName string
	NodeUID  string
	// Audiences are the token's audiences.
	Audiences []string
	// Expiry is the token's exp. TokenReviewVerifier decodes it from the
	// token the API server has just authenticated; tokens without exp are
	// refused by every verifier, so it is never zero.
	Expiry time.Time
	// IssuedAt is the token's iat (zero when the token has none), decoded
	// like Expiry.
	IssuedAt time.Time
}

// Verifier verifies a token for one cluster. audience is the audience the
// caller's API requires ("lanyard", "istio-ca"); a token is accepted only
// when it names it.
type Verifier interface {
	Verify(ctx context.Context, token, audience string) (*ServiceAccount, error)
}
