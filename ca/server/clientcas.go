package server

import (
	"crypto/x509"
	"sync"
)

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
