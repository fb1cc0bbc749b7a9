package sds

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"hash"
	"slices"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/lanyard-id/lanyard/agent"
)

// Resource names with a fixed meaning (the names Istio and SPIRE use).
const (
	// DefaultSVIDName is the caller's own SVID as a TlsCertificate.
	DefaultSVIDName = "default"
	// RootCAName is the caller's trust domain bundle as a validation
	// context with trusted_ca.
	RootCAName = "ROOTCA"
	// AllBundlesName is every trust domain's bundle (own and federated) as
	// a validation context for Envoy's SPIFFE certificate validator.
	AllBundlesName = "ALL"
)

const (
	// SecretTypeURL is the type_url of every SDS response.
	SecretTypeURL = resourcev3.SecretType
	// SPIFFEValidatorName is the name of Envoy's SPIFFE certificate
	// validator extension, as the ALL resource configures it.
	SPIFFEValidatorName = "envoy.tls.cert_validator.spiffe"
)

// view is what a subscription holds at one moment.
type view struct {
	caller  spiffeid.ID     // who is calling (from the Identifier)
	svid    *x509svid.SVID  // nil while the first SVID is pending
	bundles *x509bundle.Set // nil or partial while bundles are pending
}

// answer is the response to a set of resource names for one view.
type answer struct {
	resources []*anypb.Any
	// served names, in response order.
	served []string
	// pending names are known but not available yet (first SVID, first
	// bundle); they are served as soon as they are.
	pending []string
	// omitted names are not served to this caller: unknown, another
	// workload's identity, a trust domain without a bundle.
	omitted []string
	// certificates is how many resources are TlsCertificates.
	certificates int
	// version identifies the content: equal content, equal version, on any
	// stream and across restarts. No key material goes into it.
	version string
}

// resolve builds the answer to names (the request's resource_names; empty
// means every resource the caller has, as in SPIRE: its SVID named by its
// SPIFFE ID and each trust domain's bundle named spiffe://<td>).
func resolve(names []string, v view) (answer, error) {
	var a answer
	h := sha256.New()
	add := func(name string, s *tlsv3.Secret, fingerprint []byte) error {
		r, err := anypb.New(s)
		if err != nil {
			return fmt.Errorf("marshal secret %q: %w", name, err)
		}
		a.resources = append(a.resources, r)
		a.served = append(a.served, name)
		if s.GetTlsCertificate() != nil {
			a.certificates++
		}
		writeField(h, name)
		writeField(h, string(fingerprint))
		return nil
	}

	if len(names) == 0 {
		names = wildcardNames(v)
	}
	for _, name := range names {
		s, fp, st := lookup(name, v)
		switch st {
		case found:
			if err := add(name, s, fp); err != nil {
				return answer{}, err
			}
		case pending:
			a.pending = append(a.pending, name)
		case omitted:
			a.omitted = append(a.omitted, name)
		}
	}
	a.version = hex.EncodeToString(h.Sum(nil)[:8])
	return a, nil
}

// wildcardNames lists what an empty subscription means for this caller.
func wildcardNames(v view) []string {
	names := []string{v.caller.String(), v.caller.TrustDomain().IDString()}
	if v.bundles != nil {
		for _, b := range v.bundles.Bundles() {
			if b.TrustDomain() != v.caller.TrustDomain() {
				names = append(names, b.TrustDomain().IDString())
			}
		}
	}
	return names
}

type lookupResult int

const (
	found lookupResult = iota
	pending
	omitted
)

// lookup finds one named resource. The fingerprint identifies its content
// for the version; for a certificate it is the chain, never the key.
func lookup(name string, v view) (*tlsv3.Secret, []byte, lookupResult) {
	switch name {
	case DefaultSVIDName:
		return certificate(name, v)
	case RootCAName:
		return trustDomainBundle(name, v.caller.TrustDomain(), v)
	case AllBundlesName:
		return allBundles(name, v)
	}
	if strings.HasPrefix(name, "spiffe://") {
		id, err := spiffeid.FromString(name)
		if err != nil {
			return nil, nil, omitted
		}
		if id.Path() == "" {
			return trustDomainBundle(name, id.TrustDomain(), v)
		}
		if id != v.caller {
			// Another workload's identity: never served to this caller.
			return nil, nil, omitted
		}
		return certificate(name, v)
	}
	// A bare trust domain name ("cluster.local"), as well as spiffe://<td>.
	if td, err := spiffeid.TrustDomainFromString(name); err == nil {
		return trustDomainBundle(name, td, v)
	}
	return nil, nil, omitted
}

func certificate(name string, v view) (*tlsv3.Secret, []byte, lookupResult) {
	if v.svid == nil || len(v.svid.Certificates) == 0 || v.svid.PrivateKey == nil {
		return nil, nil, pending
	}
	if v.svid.ID != v.caller {
		// The subscription holds an SVID for an identity other than the
		// caller's: a bug in the agent core; never serve it.
		return nil, nil, omitted
	}
	chain, key, err := v.svid.Marshal() // key: PEM PKCS#8
	if err != nil {
		return nil, nil, pending
	}
	return &tlsv3.Secret{
		Name: name,
		Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain: inline(chain),
			PrivateKey:       inline(key),
		}},
	}, chain, found
}

func trustDomainBundle(name string, td spiffeid.TrustDomain, v view) (*tlsv3.Secret, []byte, lookupResult) {
	roots := authorities(v.bundles, td)
	if len(roots) == 0 {
		if td == v.caller.TrustDomain() {
			return nil, nil, pending // the agent has no bundle yet
		}
		return nil, nil, omitted // not a trust domain we federate with
	}
	s := &tlsv3.Secret{
		Name: name,
		Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa: inline(roots),
		}},
	}
	return s, roots, found
}

// allBundles is the SPIFFE certificate validator with one entry per trust
// domain, sorted by name: what SPIRE serves for "ALL". trusted_ca cannot
// express "this CA for that trust domain only".
func allBundles(name string, v view) (*tlsv3.Secret, []byte, lookupResult) {
	if len(authorities(v.bundles, v.caller.TrustDomain())) == 0 {
		return nil, nil, pending
	}
	var cfg tlsv3.SPIFFECertValidatorConfig
	for _, b := range sortedBundles(v.bundles) {
		roots := encodeCerts(b.X509Authorities())
		if len(roots) == 0 {
			continue
		}
		cfg.TrustDomains = append(cfg.TrustDomains, &tlsv3.SPIFFECertValidatorConfig_TrustDomain{
			Name:        b.TrustDomain().Name(),
			TrustBundle: inline(roots),
		})
	}
	typed, err := anypb.New(&cfg)
	if err != nil {
		return nil, nil, pending
	}
	fp, err := proto.MarshalOptions{Deterministic: true}.Marshal(&cfg)
	if err != nil {
		return nil, nil, pending
	}
	return &tlsv3.Secret{
		Name: name,
		Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			CustomValidatorConfig: &corev3.TypedExtensionConfig{Name: SPIFFEValidatorName, TypedConfig: typed},
		}},
	}, fp, found
}

func sortedBundles(set *x509bundle.Set) []*x509bundle.Bundle {
	if set == nil {
		return nil
	}
	bs := set.Bundles()
	slices.SortFunc(bs, func(a, b *x509bundle.Bundle) int {
		return strings.Compare(a.TrustDomain().Name(), b.TrustDomain().Name())
	})
	return bs
}

// authorities is the PEM of td's roots, nil when there are none.
func authorities(set *x509bundle.Set, td spiffeid.TrustDomain) []byte {
	if set == nil {
		return nil
	}
	b, ok := set.Get(td)
	if !ok {
		return nil
	}
	return encodeCerts(b.X509Authorities())
}

func encodeCerts(certs []*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

func inline(b []byte) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: b}}
}

// writeField writes a length-prefixed field so that fields cannot run
// into each other.
func writeField(h hash.Hash, s string) {
	fmt.Fprintf(h, "%d:", len(s))
	h.Write([]byte(s))
}

// Limits on one request's resource_names. Envoy names one or two secrets
// per stream (its certificate and a validation context), so these leave
// ample room while bounding the work and memory a caller can ask for.
const (
	// MaxResourceNames bounds the names of one request.
	MaxResourceNames = 64
	// MaxResourceNameLength bounds one name: a SPIFFE ID is at most 2048
	// bytes.
	MaxResourceNameLength = 2048
)

// normalize checks the limits (agent.ErrBadRequest, InvalidArgument, beyond them) and drops
// empty and repeated names, keeping the first order, in linear time.
func normalize(names []string) ([]string, error) {
	if len(names) > MaxResourceNames {
		return nil, fmt.Errorf("%w: %d resource names, at most %d allowed", agent.ErrBadRequest, len(names), MaxResourceNames)
	}
	out := make([]string, 0, len(names))
	seen := make(map[string]struct{}, len(names))
	for _, n := range names {
		if len(n) > MaxResourceNameLength {
			return nil, fmt.Errorf("%w: resource name of %d bytes, at most %d allowed", agent.ErrBadRequest, len(n), MaxResourceNameLength)
		}
		if _, dup := seen[n]; n != "" && !dup {
			seen[n] = struct{}{}
			out = append(out, n)
		}
	}
	return out, nil
}
