package workloadapi

import (
	"crypto/x509"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/lanyard-id/lanyard/agent"
)

// x509SVIDResponse builds the FetchX509SVID response from the current
// state of sub. ok is false while the SVID, or the bundle of its trust
// domain, is not there yet. An SVID error (the CA refused the workload,
// wrapping agent.ErrDenied) is returned as is.
func x509SVIDResponse(sub agent.Subscription) (resp *workload.X509SVIDResponse, ok bool, err error) {
	svid, err := sub.SVID()
	if err != nil {
		return nil, false, err
	}
	if svid == nil {
		return nil, false, nil
	}
	td := svid.ID.TrustDomain()
	own, ok := trustDomainBundle(sub.Bundles(), td)
	if !ok {
		return nil, false, nil
	}
	chain, key, err := svid.MarshalRaw()
	if err != nil {
		return nil, false, fmt.Errorf("%w: %w", agent.ErrInternal, err)
	}
	return &workload.X509SVIDResponse{
		Svids: []*workload.X509SVID{{
			SpiffeId:    svid.ID.String(),
			X509Svid:    chain,
			X509SvidKey: key,
			Bundle:      concatDER(own.X509Authorities()),
		}},
		FederatedBundles: bundleMap(sub.Bundles(), td),
	}, true, nil
}

// x509BundlesResponse builds the FetchX509Bundles response: every bundle,
// keyed by trust domain SPIFFE ID. ok is false until the bundle of the
// workload's own trust domain is there. A workload the CA refused gets its
// SVID error.
func x509BundlesResponse(w agent.Workload, sub agent.Subscription) (resp *workload.X509BundlesResponse, ok bool, err error) {
	if _, err := sub.SVID(); err != nil {
		return nil, false, err
	}
	set := sub.Bundles()
	if _, ok := trustDomainBundle(set, w.ID.TrustDomain()); !ok {
		return nil, false, nil
	}
	return &workload.X509BundlesResponse{Bundles: bundleMap(set, spiffeid.TrustDomain{})}, true, nil
}

// trustDomainBundle returns td's bundle from set when it has authorities.
func trustDomainBundle(set *x509bundle.Set, td spiffeid.TrustDomain) (*x509bundle.Bundle, bool) {
	if set == nil {
		return nil, false
	}
	b, ok := set.Get(td)
	if !ok || len(b.X509Authorities()) == 0 {
		return nil, false
	}
	return b, true
}

// bundleMap is every non-empty bundle of set but except's, keyed by trust
// domain SPIFFE ID ("spiffe://example.org"), as the spec and SPIRE key
// them.
func bundleMap(set *x509bundle.Set, except spiffeid.TrustDomain) map[string][]byte {
	if set == nil {
		return nil
	}
	var m map[string][]byte
	for _, b := range set.Bundles() {
		td := b.TrustDomain()
		if td == except {
			continue
		}
		der := concatDER(b.X509Authorities())
		if len(der) == 0 {
			continue
		}
		if m == nil {
			m = make(map[string][]byte)
		}
		m[td.IDString()] = der
	}
	return m
}

// concatDER concatenates the DER encodings of certs, as the Workload API
// carries chains and bundles.
func concatDER(certs []*x509.Certificate) []byte {
	n := 0
	for _, c := range certs {
		n += len(c.Raw)
	}
	out := make([]byte, 0, n)
	for _, c := range certs {
		out = append(out, c.Raw...)
	}
	return out
}
