package istio

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/lanyard-id/lanyard/ca"
)

// Names Istio reads the root from: the ConfigMap every istio-agent mounts
// at /var/run/secrets/istio/, and its key.
const (
	IstioRootCertConfigMap = "istio-ca-root-cert"
	IstioRootCertKey       = "root-cert.pem"
)

// Labels put on the objects Lanyard writes.
const (
	labelManagedBy = "app.kubernetes.io/managed-by"
	managedBy      = "lanyard"
	// labelIstioConfig is the label istiod puts on istio-ca-root-cert.
	labelIstioConfig = "istio.io/config"
)

// Bundler publishes the trust bundle (*ca.Authority).
type Bundler interface {
	Bundle() *ca.Bundle
	BundleChanged() <-chan struct{}
}

// RootCertConfig configures a RootCertPublisher.
type RootCertConfig struct {
	// Client talks to the cluster's API server. Required.
	Client kubernetes.Interface
	// Bundler gives the roots to publish. Required.
	Bundler Bundler
	// Name and Key of the ConfigMap (default istio-ca-root-cert,
	// root-cert.pem).
	Name string
	Key  string
	// Resync re-checks every namespace this often (default 10m).
	Resync time.Duration
	// Workers writing ConfigMaps concurrently (default 2).
	Workers int
	// Logger. Default: discard.
	Logger *slog.Logger
}

// RootCertPublisher keeps a ConfigMap holding the trust bundle (PEM) in
// every namespace: created when a namespace appears, rewritten when the
// bundle changes or someone edits or deletes it. Other keys of the
// ConfigMap are left alone. Terminating namespaces are skipped.
type RootCertPublisher struct {
	cfg       RootCertConfig
	factories []informers.SharedInformerFactory
	nsInf     cache.SharedIndexInformer
	cmInf     cache.SharedIndexInformer
	ns        corelisters.NamespaceLister
	cms       corelisters.ConfigMapLister
	queue     workqueue.TypedRateLimitingInterface[string] // made by Run
}

// NewRootCertPublisher validates cfg and sets up (but does not start) the
// informers.
func NewRootCertPublisher(cfg RootCertConfig) (*RootCertPublisher, error) {
	if cfg.Client == nil || cfg.Bundler == nil {
		return nil, errors.New("root cert publisher: client and bundler are required")
	}
	if cfg.Name == "" {
		cfg.Name = IstioRootCertConfigMap
	}
	if cfg.Key == "" {
		cfg.Key = IstioRootCertKey
	}
	if cfg.Resync == 0 {
		cfg.Resync = 10 * time.Minute
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 2
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	nsFactory := informers.NewSharedInformerFactory(cfg.Client, cfg.Resync)
	// Only ConfigMaps of our name are watched, not every ConfigMap.
	cmFactory := informers.NewSharedInformerFactoryWithOptions(cfg.Client, cfg.Resync,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", cfg.Name).String()
		}))
	p := &RootCertPublisher{
		cfg:       cfg,
		factories: []informers.SharedInformerFactory{nsFactory, cmFactory},
	}
	nsInformer := nsFactory.Core().V1().Namespaces()
	p.nsInf, p.ns = nsInformer.Informer(), nsInformer.Lister()
	cmInformer := cmFactory.Core().V1().ConfigMaps()
	p.cmInf, p.cms = cmInformer.Informer(), cmInformer.Lister()
	return p, nil
}

// Run starts the informers and workers and stops them when ctx ends.
func (p *RootCertPublisher) Run(ctx context.Context) error {
	// The queue starts a goroutine of its own: it is made here, before the
	// informers whose handlers fill it start.
	p.queue = workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "root-cert-publisher"})
	defer p.queue.ShutDown()
	enqueueNS := func(obj any) {
		if ns, ok := obj.(*corev1.Namespace); ok {
			p.queue.Add(ns.Name)
		}
	}
	if _, err := p.nsInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueueNS,
		UpdateFunc: func(_, obj any) { enqueueNS(obj) },
	}); err != nil {
		return fmt.Errorf("root cert publisher: %w", err)
	}
	enqueueCM := func(obj any) {
		if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = t.Obj
		}
		if cm, ok := obj.(*corev1.ConfigMap); ok && cm.Name == p.cfg.Name {
			p.queue.Add(cm.Namespace)
		}
	}
	if _, err := p.cmInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		UpdateFunc: func(_, obj any) { enqueueCM(obj) },
		DeleteFunc: enqueueCM,
	}); err != nil {
		return fmt.Errorf("root cert publisher: %w", err)
	}
	for _, f := range p.factories {
		f.Start(ctx.Done())
		defer f.Shutdown()
	}
	if !cache.WaitForCacheSync(ctx.Done(), p.nsInf.HasSynced, p.cmInf.HasSynced) {
		return nil // ctx ended
	}
	p.cfg.Logger.Info("root cert publisher synced", "configmap", p.cfg.Name, "namespaces", len(p.nsInf.GetStore().ListKeys()))
	done := make(chan struct{})
	for range p.cfg.Workers {
		go func() {
			defer func() { done <- struct{}{} }()
			for p.processNext(ctx) {
			}
		}()
	}
	// Every namespace again whenever the bundle changes.
	for {
		changed := p.cfg.Bundler.BundleChanged()
		select {
		case <-ctx.Done():
			p.queue.ShutDown()
			for range p.cfg.Workers {
				<-done
			}
			return nil
		case <-changed:
			p.cfg.Logger.Info("trust bundle changed, republishing root cert", "configmap", p.cfg.Name)
			nss, err := p.ns.List(labels.Everything())
			if err != nil {
				p.cfg.Logger.Error("list namespaces", "error", err)
			}
			for _, ns := range nss {
				p.queue.Add(ns.Name)
			}
		}
	}
}

func (p *RootCertPublisher) processNext(ctx context.Context) bool {
	ns, shutdown := p.queue.Get()
	if shutdown {
		return false
	}
	defer p.queue.Done(ns)
	if err := p.sync(ctx, ns); err != nil {
		if ctx.Err() != nil {
			return false
		}
		p.cfg.Logger.Warn("publish root cert", "namespace", ns, "configmap", p.cfg.Name, "error", err)
		p.queue.AddRateLimited(ns)
		return true
	}
	p.queue.Forget(ns)
	return true
}

// sync makes the ConfigMap in namespace ns hold the current roots.
func (p *RootCertPublisher) sync(ctx context.Context, ns string) error {
	n, err := p.ns.Get(ns)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if n.Status.Phase == corev1.NamespaceTerminating || n.DeletionTimestamp != nil {
		return nil
	}
	data, err := rootsPEM(p.cfg.Bundler.Bundle())
	if err != nil {
		return err
	}
	existing, err := p.cms.ConfigMaps(ns).Get(p.cfg.Name)
	switch {
	case apierrors.IsNotFound(err):
		cm := &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: p.cfg.Name, Namespace: ns, Labels: map[string]string{
				labelManagedBy: managedBy, labelIstioConfig: "true",
			}},
			Data: map[string]string{p.cfg.Key: data},
		}
		if _, err := p.cfg.Client.CoreV1().ConfigMaps(ns).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create configmap: %w", err)
		}
		p.cfg.Logger.Debug("root cert configmap created", "namespace", ns, "configmap", p.cfg.Name)
		return nil
	case err != nil:
		return err
	case existing.Data[p.cfg.Key] == data:
		return nil
	}
	cm := existing.DeepCopy()
	if cm.Data == nil {
		cm.Data = map[string]string{}
	}
	cm.Data[p.cfg.Key] = data
	lbls := maps.Clone(cm.Labels)
	if lbls == nil {
		lbls = map[string]string{}
	}
	lbls[labelManagedBy] = managedBy
	cm.Labels = lbls
	if _, err := p.cfg.Client.CoreV1().ConfigMaps(ns).Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("update configmap: %w", err)
	}
	p.cfg.Logger.Info("root cert configmap updated", "namespace", ns, "configmap", p.cfg.Name)
	return nil
}

// rootsPEM is the bundle's roots, PEM, one after the other.
func rootsPEM(b *ca.Bundle) (string, error) {
	if b == nil || len(b.Roots) == 0 {
		return "", fmt.Errorf("%w: trust bundle is empty", ca.ErrNotReady)
	}
	return string(certsPEM(b.Roots)), nil
}

func certsPEM(certs []*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}
