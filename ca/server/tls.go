package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lanyard-id/lanyard/ca"
)

// servingCert is the CA's TLS certificate, issued by its own intermediate
// (spiffe://<td>/lanyard/ca plus configured names), so clients trust it
// through the published bundle alone.
type servingCert struct {
	ca    *ca.CA
	keys  ca.KeySource
	dns   []string
	ips   []net.IP
	ttl   time.Duration
	clock func() time.Time

	cert  atomic.Pointer[tls.Certificate]
	keyID atomic.Pointer[string] // intermediate that signed cert
}

func (s *servingCert) current() *tls.Certificate { return s.cert.Load() }

func (s *servingCert) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c := s.cert.Load()
	if c == nil {
		return nil, errors.New("no serving certificate yet")
	}
	return c, nil
}

// due reports whether the certificate is missing, past half-life, or signed
// by an intermediate that is no longer active.
func (s *servingCert) due() bool {
	c := s.cert.Load()
	if c == nil {
		return true
	}
	x, err := s.keys.Current()
	if err != nil {
		return false
	}
	if k := s.keyID.Load(); k == nil || *k != x.KeyID {
		return true
	}
	half := c.Leaf.NotBefore.Add(c.Leaf.NotAfter.Sub(c.Leaf.NotBefore) / 2)
	return !s.clock().Before(half)
}

func (s *servingCert) renew(ctx context.Context) error {
	x, err := s.keys.Current()
	if err != nil {
		return err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("serving key: %w", err)
	}
	issued, err := s.ca.SignServing(ctx, key.Public(), s.dns, s.ips, s.ttl)
	if err != nil {
		return fmt.Errorf("sign serving certificate: %w", err)
	}
	tc := &tls.Certificate{PrivateKey: key, Leaf: issued.Leaf()}
	for _, c := range issued.Chain {
		tc.Certificate = append(tc.Certificate, c.Raw)
	}
	s.cert.Store(tc)
	s.keyID.Store(&x.KeyID)
	return nil
}

// clientCAs caches the client-verification pool per bundle sequence.
type clientCAs struct {
	bundler Bundler
	mu      sync.Mutex
	seq     int64
	p       *x509.CertPool
}

func (c *clientCAs) pool() *x509.CertPool {
	b := c.bundler.Bundle()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.p == nil || c.seq != b.Sequence {
		p := x509.NewCertPool()
		for _, r := range b.Roots {
			p.AddCert(r)
		}
		c.p, c.seq = p, b.Sequence
	}
	return c.p
}
