package attest

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/metadata"

	"github.com/lanyard-id/lanyard/ca/tokens"
)

// ErrInvalidToken: the bearer token a caller presented (or the sidecar's
// token file) is not a projected service-account token the agent can read.
// Errors wrapping it also wrap agent.ErrNotIdentified.
var ErrInvalidToken = errors.New("invalid service-account token")

// authorizationKey is the metadata key of "authorization: Bearer <token>".
const authorizationKey = "authorization"

// bearerToken returns the token of the call's authorization metadata;
// ok is false when there is none.
func bearerToken(ctx context.Context) (token string, ok bool, err error) {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get(authorizationKey)
	switch len(vals) {
	case 0:
		return "", false, nil
	case 1:
	default:
		return "", false, fmt.Errorf("%w: more than one authorization header", ErrInvalidToken)
	}
	scheme, tok, found := strings.Cut(strings.TrimSpace(vals[0]), " ")
	if !found || !strings.EqualFold(scheme, "bearer") {
		return "", false, fmt.Errorf("%w: authorization is not a bearer token", ErrInvalidToken)
	}
	tok = strings.TrimSpace(tok)
	if tok == "" {
		return "", false, fmt.Errorf("%w: empty bearer token", ErrInvalidToken)
	}
	return tok, true, nil
}

// tokenClaims is the part of a projected token's payload the agent reads.
type tokenClaims struct {
	Kubernetes *struct {
		Namespace      string `json:"namespace"`
		ServiceAccount *struct {
			Name string `json:"name"`
		} `json:"serviceaccount"`
	} `json:"kubernetes.io"`
}

// tokenServiceAccount reads the namespace and service account name from
// the kubernetes.io claim of a JWT WITHOUT verifying it: the agent only
// needs them to know which SPIFFE ID to ask for. The CA verifies the token
// and refuses a mismatch. Error messages never include the token.
func tokenServiceAccount(token string) (namespace, serviceAccount string, err error) {
	if len(token) > tokens.MaxTokenSize {
		return "", "", fmt.Errorf("%w: longer than %d bytes", ErrInvalidToken, tokens.MaxTokenSize)
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return "", "", fmt.Errorf("%w: not a compact JWS", ErrInvalidToken)
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", "", fmt.Errorf("%w: payload is not base64url", ErrInvalidToken)
	}
	var c tokenClaims
	if err := json.Unmarshal(payload, &c); err != nil {
		return "", "", fmt.Errorf("%w: payload is not a JSON claims object", ErrInvalidToken)
	}
	if c.Kubernetes == nil || c.Kubernetes.ServiceAccount == nil {
		return "", "", fmt.Errorf("%w: no kubernetes.io service account claim (legacy or non-projected token)", ErrInvalidToken)
	}
	namespace, serviceAccount = c.Kubernetes.Namespace, c.Kubernetes.ServiceAccount.Name
	if err := validateServiceAccount(namespace, serviceAccount); err != nil {
		return "", "", fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	return namespace, serviceAccount, nil
}

// tokenFile reads a projected token file, re-reading it only when it has
// changed. Kubernetes replaces the file atomically (a new file behind a
// symlink swap), so a changed inode, size or mtime means new contents.
type tokenFile struct {
	path string

	mu      sync.Mutex
	info    os.FileInfo
	mtime   time.Time
	content string
}

// Token returns the file's current token.
func (f *tokenFile) Token() (string, error) {
	fh, err := os.Open(f.path)
	if err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	defer fh.Close()
	fi, err := fh.Stat()
	if err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.info != nil && os.SameFile(f.info, fi) && fi.Size() == f.info.Size() && fi.ModTime().Equal(f.mtime) {
		return f.content, nil
	}
	data, err := io.ReadAll(io.LimitReader(fh, tokens.MaxTokenSize+1))
	if err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	if len(data) > tokens.MaxTokenSize {
		return "", fmt.Errorf("token file: %w: longer than %d bytes", ErrInvalidToken, tokens.MaxTokenSize)
	}
	tok := string(bytes.TrimSpace(data))
	if tok == "" {
		return "", fmt.Errorf("token file: %w: empty", ErrInvalidToken)
	}
	f.info, f.mtime, f.content = fi, fi.ModTime(), tok
	return tok, nil
}
