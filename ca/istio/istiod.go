package istio

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/lanyard-id/lanyard/ca"
	"github.com/lanyard-id/lanyard/ca/kube"
)

// Defaults of IstiodCert: what Istio's charts mount at
// /var/run/secrets/istiod/tls when ENABLE_CA_SERVER=false.
const (
	DefaultIstiodNamespace      = "istio-system"
	DefaultIstiodServiceAccount = "istiod"
	DefaultIstiodSecret         = "istiod-tls"
)

// WorkloadSigner signs a workload certificate through the CA pipeline
// (*ca.CA).
type WorkloadSigner interface {
	SignWorkload(ctx context.Context, req ca.WorkloadRequest) (*ca.Issued, error)
	TrustDomain() spiffeid.TrustDomain
}

// IstiodCertConfig configures an IstiodCert.
type IstiodCertConfig struct {
	// Client talks to the API server of the cluster istiod runs in.
	Client kubernetes.Interface
	// Signer issues the certificate (*ca.CA); Bundler gives ca.crt.
	Signer  WorkloadSigner
	Bundler Bundler
	// Policy, when set, is checked at New: it must grant istiod's service
	// account every DNS name, so a missing rule fails at start, not at the
	// first renewal.
	Policy *ca.Policy
	// Cluster is the CA's name for the cluster (recorded with the
	// certificate).
	Cluster string
	// Namespace and ServiceAccount of istiod (default istio-system,
	// istiod): the certificate is spiffe://<td>/ns/<ns>/sa/<sa>.
	Namespace      string
	ServiceAccount string
	// SecretName (default istiod-tls) gets tls.crt (leaf and
	// intermediates), tls.key (PKCS#8) and ca.crt (the roots).
	SecretName string
	// DNSNames in the certificate (default istiod.<ns>.svc).
	DNSNames []string
	// TTL asked for (0: the CA's default). Renewed at half-life.
	TTL time.Duration
	// CheckInterval is how often the Secret is read again to repair it
	// (default 1m).
	CheckInterval time.Duration
	Clock         func() time.Time
	Logger        *slog.Logger
}

// IstiodCert keeps istiod's serving certificate in a kubernetes.io/tls
// Secret: issued through the CA pipeline (so policy applies and the
// certificate is recorded), renewed at half-life, and reissued whenever the
// Secret is missing, edited, names other SANs or holds roots other than the
// current bundle.
type IstiodCert struct {
	cfg IstiodCertConfig
	id  spiffeid.ID // spiffe://<td>/ns/<namespace>/sa/<service account>
}

// NewIstiodCert fills defaults and validates cfg.
func NewIstiodCert(cfg IstiodCertConfig) (*IstiodCert, error) {
	if cfg.Client == nil || cfg.Signer == nil || cfg.Bundler == nil {
		return nil, errors.New("istiod cert: client, signer and bundler are required")
	}
	if cfg.Namespace == "" {
		cfg.Namespace = DefaultIstiodNamespace
	}
	if cfg.ServiceAccount == "" {
		cfg.ServiceAccount = DefaultIstiodServiceAccount
	}
	if cfg.SecretName == "" {
		cfg.SecretName = DefaultIstiodSecret
	}
	if len(cfg.DNSNames) == 0 {
		cfg.DNSNames = []string{"istiod." + cfg.Namespace + ".svc"}
	}
	if cfg.TTL < 0 {
		return nil, errors.New("istiod cert: negative TTL")
	}
	if cfg.CheckInterval <= 0 {
		cfg.CheckInterval = time.Minute
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	id, err := ca.WorkloadID(cfg.Signer.TrustDomain(), cfg.Namespace, cfg.ServiceAccount)
	if err != nil {
		return nil, fmt.Errorf("istiod cert: %w", err)
	}
	if cfg.Policy != nil {
		grant, err := cfg.Policy.Authorize(id, cfg.Namespace, cfg.ServiceAccount)
		if err != nil {
			return nil, fmt.Errorf("istiod cert: %w", err)
		}
		for _, name := range cfg.DNSNames {
			if !slices.Contains(grant.DNSNames, name) {
				return nil, fmt.Errorf("istiod cert: policy does not grant DNS name %q to %s/%s: add a policy rule "+
					"{namespace: %s, serviceAccount: %s, dnsNames: [...]}", name, cfg.Namespace, cfg.ServiceAccount, cfg.Namespace, cfg.ServiceAccount)
			}
		}
	}
	return &IstiodCert{cfg: cfg, id: id}, nil
}

// Run keeps the Secret current until ctx ends. Failures are logged and
// retried with backoff (5s doubling up to CheckInterval).
func (c *IstiodCert) Run(ctx context.Context) error {
	backoff := 5 * time.Second
	for {
		changed := c.cfg.Bundler.BundleChanged()
		next, err := c.Reconcile(ctx)
		wait := c.cfg.CheckInterval
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			c.cfg.Logger.Error("istiod certificate", "namespace", c.cfg.Namespace, "secret", c.cfg.SecretName, "error", err)
			wait, backoff = backoff, min(2*backoff, c.cfg.CheckInterval)
		} else {
			backoff = 5 * time.Second
			if d := next.Sub(c.cfg.Clock()); d < wait {
				wait = max(d, time.Second)
			}
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-changed:
		case <-t.C:
		}
		t.Stop()
	}
}

// Reconcile reads the Secret and reissues the certificate when it is
// missing, invalid, past half-life or out of date. It returns when the
// certificate should be renewed next.
func (c *IstiodCert) Reconcile(ctx context.Context) (time.Time, error) {
	secrets := c.cfg.Client.CoreV1().Secrets(c.cfg.Namespace)
	existing, err := secrets.Get(ctx, c.cfg.SecretName, metav1.GetOptions{})
	found := err == nil
	if err != nil && !apierrors.IsNotFound(err) {
		return time.Time{}, fmt.Errorf("%w: get secret %s/%s: %v", kube.ErrUnavailable, c.cfg.Namespace, c.cfg.SecretName, err)
	}
	roots, err := rootsPEM(c.cfg.Bundler.Bundle())
	if err != nil {
		return time.Time{}, err
	}
	if found {
		if renewAt, ok := c.current(existing, roots); ok {
			return renewAt, nil
		}
		if t := existing.Type; t != corev1.SecretTypeTLS && t != corev1.SecretTypeOpaque && t != "" {
			return time.Time{}, fmt.Errorf("secret %s/%s has type %s, want %s", c.cfg.Namespace, c.cfg.SecretName, t, corev1.SecretTypeTLS)
		}
	}
	data, leaf, err := c.issue(ctx, roots)
	if err != nil {
		return time.Time{}, err
	}
	if !found {
		s := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: c.cfg.SecretName, Namespace: c.cfg.Namespace,
				Labels: map[string]string{labelManagedBy: managedBy}},
			Type: corev1.SecretTypeTLS,
			Data: data,
		}
		if _, err := secrets.Create(ctx, s, metav1.CreateOptions{}); err != nil {
			return time.Time{}, fmt.Errorf("create secret %s/%s: %w", c.cfg.Namespace, c.cfg.SecretName, err)
		}
	} else {
		s := existing.DeepCopy()
		if s.Data == nil {
			s.Data = map[string][]byte{}
		}
		maps.Copy(s.Data, data)
		lbls := maps.Clone(s.Labels)
		if lbls == nil {
			lbls = map[string]string{}
		}
		lbls[labelManagedBy] = managedBy
		s.Labels = lbls
		if _, err := secrets.Update(ctx, s, metav1.UpdateOptions{}); err != nil {
			return time.Time{}, fmt.Errorf("update secret %s/%s: %w", c.cfg.Namespace, c.cfg.SecretName, err)
		}
	}
	c.cfg.Logger.Info("istiod certificate issued", "namespace", c.cfg.Namespace, "secret", c.cfg.SecretName,
		"serial", leaf.SerialNumber.Text(16), "not_after", leaf.NotAfter, "dns", c.cfg.DNSNames)
	return halfLife(leaf), nil
}

// current reports whether the Secret holds a usable certificate for
// istiod with the current roots, and when to renew it.
func (c *IstiodCert) current(s *corev1.Secret, roots string) (time.Time, bool) {
	crt, key, cacrt := s.Data[corev1.TLSCertKey], s.Data[corev1.TLSPrivateKeyKey], s.Data[caCertKey]
	if !bytes.Equal(cacrt, []byte(roots)) {
		return time.Time{}, false
	}
	pair, err := tls.X509KeyPair(crt, key)
	if err != nil || pair.Leaf == nil {
		return time.Time{}, false
	}
	leaf := pair.Leaf
	if !slices.Equal(slices.Sorted(slices.Values(leaf.DNSNames)), slices.Sorted(slices.Values(c.cfg.DNSNames))) {
		return time.Time{}, false
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != c.id.String() {
		return time.Time{}, false
	}
	renewAt := halfLife(leaf)
	if !c.cfg.Clock().Before(renewAt) {
		return time.Time{}, false
	}
	return renewAt, true
}

// caCertKey is the key of the roots in the Secret (Istio's alternate CA
// path /var/run/secrets/istiod/tls/ca.crt).
const caCertKey = "ca.crt"

// issue makes a key, has the CA sign it for istiod and returns the
// Secret's data.
func (c *IstiodCert) issue(ctx context.Context, roots string) (map[string][]byte, *x509.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("istiod key: %w", err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: c.cfg.DNSNames}, key)
	if err != nil {
		return nil, nil, fmt.Errorf("istiod CSR: %w", err)
	}
	issued, err := c.cfg.Signer.SignWorkload(ctx, ca.WorkloadRequest{
		Subject: ca.Subject{Cluster: c.cfg.Cluster, Namespace: c.cfg.Namespace, ServiceAccount: c.cfg.ServiceAccount},
		CSR:     csr, TTL: c.cfg.TTL, Caller: "lanyard:istiod-cert", Kind: ca.KindIstio,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("sign istiod certificate: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("istiod key: %w", err)
	}
	return map[string][]byte{
		corev1.TLSCertKey:       certsPEM(issued.Chain),
		corev1.TLSPrivateKeyKey: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}),
		caCertKey:               []byte(roots),
	}, issued.Leaf(), nil
}

func halfLife(c *x509.Certificate) time.Time {
	return c.NotBefore.Add(c.NotAfter.Sub(c.NotBefore) / 2)
}
