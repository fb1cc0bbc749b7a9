package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/sync/errgroup"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/lanyard-id/lanyard/ca"
	"github.com/lanyard-id/lanyard/ca/bundlefile"
	"github.com/lanyard-id/lanyard/ca/health"
	"github.com/lanyard-id/lanyard/ca/kube"
	"github.com/lanyard-id/lanyard/ca/server"
	"github.com/lanyard-id/lanyard/ca/serving"
	"github.com/lanyard-id/lanyard/ca/tokens"
	"github.com/lanyard-id/lanyard/ca/upstream"
	"github.com/lanyard-id/lanyard/storage"
)

// caProcess is a wired CA: every part built, nothing running yet.
type caProcess struct {
	store     storage.Store
	writer    *storage.Writer
	retention *storage.Retention
	bundles   *ca.BundleSync // nil with a store of one replica
	authority *ca.Authority
	serving   *serving.Cert
	server    *server.Server
	health    *health.Server
	bundle    *bundlefile.Writer // nil without bundleFile
	log       *slog.Logger
	istio     *istioParts     // nil when Istio is off
	pods      kube.PodIndexes // clusters whose pods the CA watches
	controls  *ca.Controls    // bans, evictions and deny list, polled from the store
	upstream  upstream.Authority
}

// buildCA wires a CA from cfg. extraVerifiers adds verifiers by cluster name
// (dev mode's issuer).
func buildCA(ctx context.Context, cfg FileConfig, log *slog.Logger, extra map[string]tokens.Verifier) (*caProcess, error) {
	td, err := spiffeid.TrustDomainFromString(cfg.TrustDomain)
	if err != nil {
		return nil, fmt.Errorf("trust domain: %w", err)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	// The pod indexes come first: checkBoundPod verifiers read them.
	agentPods, err := buildPodIndexes(cfg, log)
	if err != nil {
		return nil, err
	}
	verifiers, tokenStats, err := buildVerifiers(cfg, log, agentPods)
	if err != nil {
		return nil, err
	}
	for name, v := range extra {
		verifiers[name] = v
	}
	defaultCluster := ""
	if len(cfg.Clusters) > 0 {
		defaultCluster = cfg.Clusters[0].Name
	}
	clusters, err := tokens.NewClusters(defaultCluster, verifiers)
	if err != nil {
		return nil, err
	}
	st, err := buildStore(ctx, cfg, log)
	if err != nil {
		return nil, err
	}
	up, err := buildUpstream(ctx, cfg, td, st, log)
	if err != nil {
		st.Close()
		return nil, err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := server.NewMetrics(reg)
	reg.MustRegister(tokens.NewCollector(tokenStats...))
	registerPodIndexMetrics(reg, agentPods)
	registerUpstreamMetrics(reg, up)
	writer, err := storage.NewWriter(storage.WriterConfig{Store: st, Logger: log.With("component", "writer"), OnBatch: metrics.ObserveStoreBatch})
	if err != nil {
		st.Close()
		return nil, err
	}
	retention, err := buildRetention(cfg, st, reg, log)
	if err != nil {
		st.Close()
		return nil, err
	}
	authority, err := ca.NewAuthority(ca.AuthorityConfig{
		TrustDomain: td, Upstream: up, TTL: cfg.Intermediate.TTL,
		KeyType: cfg.Intermediate.KeyType, KeyCurve: cfg.Intermediate.Curve, KeySize: cfg.Intermediate.Size,
		Logger: log.With("component", "authority"), Shared: sharedBundle(st),
	})
	if err != nil {
		st.Close()
		return nil, err
	}
	reg.MustRegister(ca.NewUpstreamCollector(authority))
	controls, err := ca.NewControls(ca.ControlsConfig{Store: st, Logger: log.With("component", "controls")})
	if err != nil {
		st.Close()
		return nil, err
	}
	bundleSync, err := buildBundleSync(st, authority, log)
	if err != nil {
		st.Close()
		return nil, err
	}
	issuer, err := ca.New(ca.Config{
		TrustDomain: td, Keys: authority, Recorder: writer, Policy: cfg.Policy, Denied: controls,
		DefaultTTL: cfg.TTL.Default, MaxTTL: cfg.TTL.Max, AgentTTL: cfg.TTL.Agent, Backdate: cfg.TTL.Backdate,
		Logger: log.With("component", "ca"),
	})
	if err != nil {
		st.Close()
		return nil, err
	}
	ips := make([]net.IP, 0, len(cfg.ServingIPs))
	for _, s := range cfg.ServingIPs {
		ips = append(ips, net.ParseIP(s))
	}
	istio, err := buildIstio(cfg, issuer, authority, agentPods, log)
	if err != nil {
		st.Close()
		return nil, err
	}
	cert, err := serving.New(serving.Config{
		CA: issuer, Keys: authority, DNSNames: cfg.ServingDNSNames, IPs: ips, Changed: authority.BundleChanged,
		Logger: log.With("component", "serving"),
	})
	if err != nil {
		st.Close()
		return nil, err
	}
	admin, err := buildAdmin(cfg, td, writer, tokenStats)
	if err != nil {
		st.Close()
		return nil, err
	}
	var bundle *bundlefile.Writer
	if cfg.BundleFile != "" {
		if bundle, err = bundlefile.New(bundlefile.Config{Path: cfg.BundleFile, Bundler: authority, Logger: log.With("component", "bundlefile")}); err != nil {
			st.Close()
			return nil, err
		}
	}
	srv, err := server.New(server.Config{
		Addr: cfg.ListenAddr, CA: issuer, Authority: authority, Tokens: clusters, Store: st, Serving: cert,
		AgentAudience: cfg.Agents.Audience, AgentServiceAccounts: cfg.Agents.ServiceAccounts,
		TrustUnixAttestation: cfg.Agents.TrustUnixAttestation,
		Registerer:           reg, Metrics: metrics, Logger: log.With("component", "server"),
		Istio: istio.serverConfig(), AgentPods: podFinder(agentPods), Controls: controls, Admin: admin,
	})
	if err != nil {
		if admin.Socket != nil {
			admin.Socket.Close()
		}
		st.Close()
		return nil, err
	}
	hs, err := health.New(health.Config{Addr: cfg.HTTPAddr, Ready: srv.Ready, Gatherer: reg, Profiling: cfg.Profiling})
	if err != nil {
		srv.Close()
		st.Close()
		return nil, err
	}
	return &caProcess{store: st, writer: writer, retention: retention, bundles: bundleSync, authority: authority, serving: cert,
		server: srv, health: hs, bundle: bundle, istio: istio, pods: agentPods, controls: controls, log: log, upstream: up}, nil
}

// run starts every part and returns when ctx ends or a part fails. It
// stops in order: the server first (finishing the calls it accepted), then
// the writer (flushing their records) and the authority, then the store.
func (p *caProcess) run(ctx context.Context) error {
	defer p.store.Close()
	defer closeUpstream(p.upstream)
	if err := p.authority.Prepare(ctx); err != nil {
		return fmt.Errorf("prepare CA: %w", err)
	}

	if err := p.controls.Reload(ctx); err != nil {
		return fmt.Errorf("load admin controls: %w", err)
	}
	// The background parts outlive ctx until the server has stopped.
	backCtx, stopBack := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBack()
	back, backCtx := errgroup.WithContext(backCtx)
	back.Go(func() error { return p.writer.Run(backCtx) })
	back.Go(func() error { return p.authority.Run(backCtx) })
	back.Go(func() error { return p.retention.Run(backCtx) })
	if p.bundles != nil {
		back.Go(func() error { return p.bundles.Run(backCtx) })
	}
	if r, ok := p.upstream.(upstreamRunner); ok {
		back.Go(func() error { return r.Run(backCtx) })
	}
	// The first serving certificate before the first handshake (it is
	// recorded: the writer runs); serving.Run retries if this fails.
	if err := p.serving.Renew(ctx); err != nil {
		p.log.Warn("first serving certificate", "error", err)
	}
	back.Go(func() error { return p.serving.Run(backCtx) })
	if p.bundle != nil {
		back.Go(func() error { return p.bundle.Run(backCtx) })
	}
	back.Go(func() error { return p.controls.Run(backCtx) })
	for _, run := range p.istio.runners() {
		back.Go(func() error { return run(backCtx) })
	}
	for _, idx := range p.pods {
		back.Go(func() error { return idx.Run(backCtx) })
	}
	srvCtx, stopSrv := context.WithCancel(ctx)
	defer stopSrv()
	go func() { // a failed background part stops the server too
		<-backCtx.Done()
		stopSrv()
	}()
	front, srvCtx := errgroup.WithContext(srvCtx)
	front.Go(func() error { return p.server.Run(srvCtx) })
	front.Go(func() error { return p.health.Run(srvCtx) })
	err := front.Wait()
	stopBack()
	return errors.Join(err, back.Wait())
}

// podFinder is the indexes as a server.PodFinder, nil when there are none
// (a typed nil map would not compare equal to nil in the interface).
func podFinder(m kube.PodIndexes) server.PodFinder {
	if len(m) == 0 {
		return nil
	}
	return m
}

// buildPodIndexes watches the pods of every cluster with a kubernetes:
// section, for the agents' k8s attestation checks.
func buildPodIndexes(cfg FileConfig, log *slog.Logger) (kube.PodIndexes, error) {
	out := kube.PodIndexes{}
	for _, cl := range cfg.Clusters {
		if cl.Kubernetes == nil {
			continue
		}
		client, err := kubeClient(cl.Kubernetes.Kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("cluster %q: %w", cl.Name, err)
		}
		idx, err := kube.NewPodIndex(kube.PodIndexConfig{Cluster: cl.Name, Client: client, Logger: log.With("component", "pods", "cluster", cl.Name)})
		if err != nil {
			return nil, err
		}
		out[cl.Name] = idx
	}
	return out, nil
}

// registerPodIndexMetrics exports whether each pod index has synced
// (lanyard_ca_pod_index_synced{cluster}, 0 or 1).
func registerPodIndexMetrics(reg prometheus.Registerer, pods kube.PodIndexes) {
	for name, idx := range pods {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "lanyard_ca_pod_index_synced", Help: "1 once the pod index of the cluster has listed every pod, else 0.",
			ConstLabels: prometheus.Labels{"cluster": name},
		}, func() float64 {
			if idx.Synced() {
				return 1
			}
			return 0
		}))
	}
}

// buildVerifiers makes each cluster's token verifier, and says where its
// counters are for the token metrics.
func buildVerifiers(cfg FileConfig, log *slog.Logger, pods kube.PodIndexes) (map[string]tokens.Verifier, []tokens.ClusterStats, error) {
	out := make(map[string]tokens.Verifier, len(cfg.Clusters))
	stats := make([]tokens.ClusterStats, 0, len(cfg.Clusters))
	for _, cl := range cfg.Clusters {
		v, st, err := buildVerifier(cl, log.With("component", "tokens"), pods)
		if err != nil {
			return nil, nil, fmt.Errorf("cluster %q: %w", cl.Name, err)
		}
		out[cl.Name] = v
		stats = append(stats, st)
	}
	return out, stats, nil
}

// buildVerifier is one cluster's verifier: TokenReview, or JWKS behind a
// cache; with kubernetes.checkBoundPod, wrapped to check the tokens'
// bound pods in the cluster's pod index.
func buildVerifier(cl ClusterConfig, log *slog.Logger, pods kube.PodIndexes) (tokens.Verifier, tokens.ClusterStats, error) {
	v, st, err := baseVerifier(cl, log)
	if err != nil || cl.Kubernetes == nil || !cl.Kubernetes.CheckBoundPod {
		return v, st, err
	}
	bv, err := kube.NewBoundPodVerifier(kube.BoundPodConfig{Cluster: cl.Name, Next: v, Pods: pods[cl.Name], Logger: log})
	return bv, st, err
}

func baseVerifier(cl ClusterConfig, log *slog.Logger) (tokens.Verifier, tokens.ClusterStats, error) {
	if tr := cl.TokenReview; tr != nil {
		client, err := kubeClient(tr.Kubeconfig)
		if err != nil {
			return nil, tokens.ClusterStats{}, err
		}
		rv, err := tokens.NewTokenReviewVerifier(tokens.TokenReviewConfig{Cluster: cl.Name, Client: client, CacheTTL: tr.CacheTTL, Logger: log})
		if err != nil {
			return nil, tokens.ClusterStats{}, err
		}
		return rv, tokens.ClusterStats{Cluster: cl.Name, Method: tokens.MethodTokenReview, Source: rv}, nil
	}
	hc, err := httpClientWithCA(cl.CACertFile)
	if err != nil {
		return nil, tokens.ClusterStats{}, err
	}
	jv, err := tokens.NewJWKSVerifier(tokens.JWKSConfig{
		Cluster: cl.Name, Issuer: cl.Issuer, DiscoveryURL: cl.DiscoveryURL, JWKSURL: cl.JWKSURL,
		JWKSFile: cl.JWKSFile, HTTPClient: hc, Logger: log,
		FetchTimeout: cl.Keys.FetchTimeout, MinRefetchInterval: cl.Keys.RetryAfterFailure,
		MaxKeyAge: cl.Keys.MaxAge, JWKSHosts: cl.Keys.JWKSHosts, Leeway: cl.Keys.Leeway,
	})
	if err != nil {
		return nil, tokens.ClusterStats{}, err
	}
	c, err := tokens.NewCache(jv, tokens.CacheConfig{})
	if err != nil {
		return nil, tokens.ClusterStats{}, err
	}
	return c, tokens.ClusterStats{Cluster: cl.Name, Method: tokens.MethodJWKS, Source: c, Keys: jv}, nil
}

func kubeClient(kubeconfig string) (kubernetes.Interface, error) {
	var rc *rest.Config
	var err error
	if kubeconfig == "" {
		rc, err = rest.InClusterConfig()
	} else {
		rc, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	}
	if err != nil {
		return nil, fmt.Errorf("kubernetes client config: %w", err)
	}
	return kubernetes.NewForConfig(rc)
}

func httpClientWithCA(caFile string) (*http.Client, error) {
	if caFile == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("read CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, errors.New("CA file holds no certificate")
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return &http.Client{Transport: tr}, nil
}
