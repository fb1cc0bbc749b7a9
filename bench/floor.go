package bench

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"runtime"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/lanyard-id/lanyard/ca/tokens"
)

// floorResult is the crypto floor: certificates per second when a process
// does nothing but the per-certificate cryptography on every core.
type floorResult struct {
	rate    float64
	workers int
	elapsed time.Duration
	cpu     time.Duration // CPU time the bench process used meanwhile
	certs   int
}

// cpuPerCert is the CPU time one certificate's cryptography took.
func (f floorResult) cpuPerCert() time.Duration {
	if f.certs == 0 {
		return 0
	}
	return f.cpu / time.Duration(f.certs)
}

// floorClaims is the part of a projected token the floor decodes, as the
// CA's verifier does.
type floorClaims struct {
	Kubernetes struct {
		Namespace      string `json:"namespace"`
		ServiceAccount struct {
			Name string `json:"name"`
			UID  string `json:"uid"`
		} `json:"serviceaccount"`
	} `json:"kubernetes.io"`
}

// cryptoFloor runs, on GOMAXPROCS goroutines for d, the cryptographic work
// of one certificate and nothing else: RS256 verification of a dev token
// with go-jose (and decoding its claims), parsing a P-256 CSR and checking
// its signature, and signing one leaf with a P-256 intermediate.
func cryptoFloor(ctx context.Context, d time.Duration, iss *tokens.DevIssuer, audience string, td spiffeid.TrustDomain, csrs [][]byte) (floorResult, error) {
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(iss.JWKS(), &set); err != nil || len(set.Keys) == 0 {
		return floorResult{}, fmt.Errorf("crypto floor: dev issuer key set: %v", err)
	}
	pub := set.Keys[0].Key
	tok, err := iss.Mint(tokens.DevClaims{
		Namespace: "bench-ns-00", ServiceAccount: "sa-000", Audiences: []string{audience},
		PodName: "sa-000-floor", NodeName: "bench-node-0",
	})
	if err != nil {
		return floorResult{}, fmt.Errorf("crypto floor: %w", err)
	}
	interKey, interCert, err := floorIntermediate(td)
	if err != nil {
		return floorResult{}, err
	}
	expect := jwt.Expected{Issuer: iss.Issuer(), AnyAudience: jwt.Audience{audience}}
	one := func(csrDER []byte) error {
		jt, err := jwt.ParseSigned(tok, []jose.SignatureAlgorithm{jose.RS256})
		if err != nil {
			return err
		}
		var std jwt.Claims
		var priv floorClaims
		if err := jt.Claims(pub, &std, &priv); err != nil {
			return err
		}
		now := time.Now()
		exp := expect
		exp.Time = now
		if err := std.ValidateWithLeeway(exp, 0); err != nil {
			return err
		}
		csr, err := x509.ParseCertificateRequest(csrDER)
		if err != nil {
			return err
		}
		if err := csr.CheckSignature(); err != nil {
			return err
		}
		id, err := spiffeid.FromSegments(td, "ns", priv.Kubernetes.Namespace, "sa", priv.Kubernetes.ServiceAccount.Name)
		if err != nil {
			return err
		}
		serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
		if err != nil {
			return err
		}
		tmpl := &x509.Certificate{
			SerialNumber: serial, NotBefore: now.Add(-10 * time.Second), NotAfter: now.Add(time.Hour),
			URIs: []*url.URL{id.URL()}, KeyUsage: x509.KeyUsageDigitalSignature,
			ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
			BasicConstraintsValid: true,
		}
		_, err = x509.CreateCertificate(rand.Reader, tmpl, interCert, csr.PublicKey, interKey)
		return err
	}
	if err := one(csrs[0]); err != nil { // fail fast, outside the clock
		return floorResult{}, fmt.Errorf("crypto floor: %w", err)
	}

	workers := runtime.GOMAXPROCS(0)
	counts := make([]int, workers)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	cpu0, err := cpuTime(os.Getpid())
	if err != nil {
		return floorResult{}, err
	}
	start := time.Now()
	deadline := start.Add(d)
	for w := range workers {
		wg.Go(func() {
			for i := w; ctx.Err() == nil && time.Now().Before(deadline); i += workers {
				if err := one(csrs[i%len(csrs)]); err != nil {
					errs[w] = err
					return
				}
				counts[w]++
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpu1, err := cpuTime(os.Getpid())
	if err != nil {
		return floorResult{}, err
	}
	if err := errors.Join(errs...); err != nil {
		return floorResult{}, fmt.Errorf("crypto floor: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return floorResult{}, err
	}
	total := 0
	for _, c := range counts {
		total += c
	}
	return floorResult{
		rate: float64(total) / elapsed.Seconds(), workers: workers, elapsed: elapsed, cpu: cpu1 - cpu0, certs: total,
	}, nil
}

// floorIntermediate makes a P-256 CA certificate to sign the floor's leaves.
func floorIntermediate(td spiffeid.TrustDomain) (*ecdsa.PrivateKey, *x509.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("crypto floor: intermediate key: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "lanyard bench floor intermediate"},
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(24 * time.Hour),
		URIs: []*url.URL{td.ID().URL()}, IsCA: true, MaxPathLenZero: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, fmt.Errorf("crypto floor: intermediate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("crypto floor: intermediate: %w", err)
	}
	return key, cert, nil
}
