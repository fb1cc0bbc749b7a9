package tokens_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/lanyard-id/lanyard/ca/tokens"
)

// A development CA mints a token with its DevIssuer and verifies it
// offline with a JWKSVerifier reading the issuer's key set file.
func ExampleDevIssuer() {
	dir, err := os.MkdirTemp("", "lanyard-example-")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)

	issuer, err := tokens.LoadOrCreateDevIssuer(dir, "https://kubernetes.default.svc.cluster.local")
	if err != nil {
		fmt.Println(err)
		return
	}
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	token, err := issuer.Mint(tokens.DevClaims{
		Namespace:      "payments",
		ServiceAccount: "api",
		Audiences:      []string{"lanyard"},
		PodName:        "api-0",
		Now:            now,
	})
	if err != nil {
		fmt.Println(err)
		return
	}

	verifier, err := tokens.NewJWKSVerifier(tokens.JWKSConfig{
		Cluster:  "dev",
		Issuer:   issuer.Issuer(),
		JWKSFile: issuer.JWKSPath(),
		Clock:    func() time.Time { return now.Add(time.Minute) },
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	sa, err := verifier.Verify(context.Background(), token, "lanyard")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(sa.Cluster, sa.Namespace, sa.Name, sa.PodName, sa.Expiry.UTC().Format(time.RFC3339))

	_, err = verifier.Verify(context.Background(), token, "istio-ca")
	fmt.Println(err)
	// Output:
	// dev payments api api-0 2026-01-02T04:04:05Z
	// token audience not accepted: audience "istio-ca" not in token
}
