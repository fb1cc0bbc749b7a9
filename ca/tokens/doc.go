// Package tokens verifies Kubernetes service-account tokens: the first step
// of the CA pipeline, which turns a bearer token into a ServiceAccount.
//
// Two Verifier implementations cover a cluster:
//
//   - JWKSVerifier checks projected service-account tokens offline against
//     the issuer's public keys, from OIDC discovery, a JWKS URL, a file or
//     static bytes. Keys are cached and refreshed; an unknown kid causes at
//     most one rate-limited refetch shared by concurrent callers. A slow
//     or failing key endpoint holds up only its own cluster's callers, and
//     only until its first fetch has failed: at most one fetch is in
//     flight (bounded by FetchTimeout), a failure is remembered for
//     MinRefetchInterval (callers are answered at once meanwhile), and keys
//     kept through failing refreshes expire after MaxKeyAge.
//   - TokenReviewVerifier asks the cluster's API server (TokenReview) and
//     caches positive answers briefly.
//
// Both check issuer (JWKS), expiry, audience and the kubernetes.io claims,
// and both refuse legacy secret-based tokens. Clusters routes a request to
// the verifier of the cluster it names, and Cache adds a short positive
// cache in front of any Verifier; neither cache keeps a result past the
// token's exp, and both key entries by SHA-256 of the token, never the
// token itself.
//
// Collector exports the Stats of the caches and TokenReview verifiers as
// Prometheus counters (requests, cache hits, calls past the cache) by
// cluster and method.
//
// # Errors
//
// Every error wraps exactly one sentinel with a short reason:
//
//   - ErrInvalidToken: empty, oversized (> MaxTokenSize) or malformed token,
//     algorithm not allowed, unknown kid, bad signature, wrong issuer, no
//     exp, missing or inconsistent kubernetes.io claims, legacy token, not
//     a service account (TokenReview).
//   - ErrExpired: exp in the past, or nbf or iat in the future, beyond the
//     leeway.
//   - ErrWrongAudience: the requested audience is not among the token's.
//   - ErrUnknownCluster: Clusters has no verifier for the named cluster.
//   - ErrUnavailable: the key set was never fetched, or the TokenReview API
//     call failed; no token can be verified right now.
//   - ErrKeysTooOld: the key endpoint has failed for longer than MaxKeyAge;
//     the cluster's tokens are refused until a fetch succeeds.
//
// Error text and logs never contain a token.
//
// # Development issuer
//
// DevIssuer is for DEVELOPMENT ONLY: it mints tokens in the exact format of
// Kubernetes projected tokens from a key in a local file, so that a CA
// configured with its key set (JWKSConfig.JWKSFile = DevIssuer.JWKSPath())
// can be run and tested without a cluster. Never trust its key set in
// production.
package tokens
