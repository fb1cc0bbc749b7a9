package ca_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"log"
	"os"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/lanyard-id/lanyard/ca"
	"github.com/lanyard-id/lanyard/ca/upstream"
	"github.com/lanyard-id/lanyard/storage"
)

// logRecorder stands in for the store: it only prints what it records.
type logRecorder struct{}

func (logRecorder) Record(_ context.Context, rec storage.CertificateRecord) error {
	fmt.Println("recorded", rec.Kind, rec.SPIFFEID)
	return nil
}

// A self-signed root mints this replica's intermediate, which signs a
// workload's CSR; the SVID verifies against the Authority's bundle.
func ExampleCA_SignWorkload() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "lanyard-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	root, err := upstream.NewSelfSigned(upstream.SelfSignedConfig{Dir: dir, TrustDomain: td.Name()})
	if err != nil {
		log.Fatal(err)
	}
	authority, err := ca.NewAuthority(ca.AuthorityConfig{TrustDomain: td, Upstream: root, Name: "replica-0"})
	if err != nil {
		log.Fatal(err)
	}
	if err := authority.Prepare(ctx); err != nil {
		log.Fatal(err)
	}
	issuer, err := ca.New(ca.Config{TrustDomain: td, Keys: authority, Recorder: logRecorder{}})
	if err != nil {
		log.Fatal(err)
	}

	// The workload (or its node agent) makes the key and the CSR.
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		log.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		log.Fatal(err)
	}
	issued, err := issuer.SignWorkload(ctx, ca.WorkloadRequest{
		Subject: ca.Subject{Namespace: "payments", ServiceAccount: "api"},
		CSR:     csr,
		Caller:  "token",
	})
	if err != nil {
		log.Fatal(err)
	}

	bundle := x509bundle.FromX509Authorities(td, authority.Bundle().Roots)
	id, _, err := x509svid.Verify(issued.Chain, bundle)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("verified", id)
	// Output:
	// recorded workload spiffe://cluster.local/ns/payments/sa/api
	// verified spiffe://cluster.local/ns/payments/sa/api
}
