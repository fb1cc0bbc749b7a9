package kube

import (
	"bufio"
	"context"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// Environment and files.
const (
	// EnvBinDir names a directory holding kube-apiserver and etcd, instead
	// of <repository>/.cache/bin.
	EnvBinDir = "LANYARD_K8S_BIN"
	// MakeTarget builds the binaries.
	MakeTarget = "make k8s-tools"
)

// Defaults.
const (
	// DefaultStartTimeout bounds the wait for etcd and the API server.
	DefaultStartTimeout = 90 * time.Second
	// AdminUser is the static admin (group system:masters).
	AdminUser = "lanyard-test-admin"
	// CallTimeout bounds each API request the harness makes.
	CallTimeout = 30 * time.Second
)

// Options configures StartKube. The zero value is fine.
type Options struct {
	// Name is used in log and file names (default "kube").
	Name string
	// Args are extra kube-apiserver flags ("--flag=value").
	Args []string
	// StartTimeout bounds the wait for etcd and /readyz (default 90s).
	StartTimeout time.Duration
}

// Kube is a running control plane: etcd and kube-apiserver.
type Kube struct {
	Name string
	// URL is the API server's https://127.0.0.1:<port>; Issuer is its
	// --service-account-issuer (the same URL), so that OIDC discovery is
	// at Issuer + "/.well-known/openid-configuration".
	URL    string
	Issuer string
	// JWKSURL is --service-account-jwks-uri (URL + "/openid/v1/jwks").
	JWKSURL string
	// CAFile is the PEM of the CA that issued the serving certificate.
	CAFile string
	// Kubeconfig is an admin kubeconfig file; Client an admin clientset.
	Kubeconfig string
	Client     kubernetes.Interface
	// Config is the admin client configuration.
	Config *rest.Config

	dir        string
	pki        *pki
	adminToken string
	httpClient *http.Client
}

// StartKube starts etcd and kube-apiserver on free 127.0.0.1 ports, waits
// until the API server's /readyz answers 200, opens OIDC discovery to
// unauthenticated clients, and stops both when the test ends.
func StartKube(t testing.TB, opts Options) *Kube {
	t.Helper()
	return StartKubes(t, opts)[0]
}

// StartKubes starts one control plane per Options, all at once (give each
// its own Name), as StartKube does.
func StartKubes(t testing.TB, opts ...Options) []*Kube {
	t.Helper()
	bins := binaries(t)
	out := make([]*Kube, len(opts))
	errs := make([]error, len(opts))
	var wg sync.WaitGroup
	for i, o := range opts {
		wg.Go(func() { out[i], errs[i] = startKube(t, bins, o) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("kube: %v", err)
	}
	return out
}

// startKube may run on any goroutine: it reports errors instead of
// failing the test.
func startKube(t testing.TB, bins binPaths, opts Options) (*Kube, error) {
	if opts.Name == "" {
		opts.Name = "kube"
	}
	if opts.StartTimeout == 0 {
		opts.StartTimeout = DefaultStartTimeout
	}
	dir := t.TempDir()
	pki, err := newPKI(dir, opts.Name)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", opts.Name, err)
	}
	k := &Kube{Name: opts.Name, CAFile: pki.caFile, dir: dir, pki: pki, adminToken: randomToken()}
	start := time.Now()
	etcdURL, err := startEtcd(t, bins.etcd, dir, opts)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", opts.Name, err)
	}
	if err := startAPIServer(t, k, bins.apiserver, etcdURL, opts); err != nil {
		return nil, fmt.Errorf("%s: %w", opts.Name, err)
	}
	if err := k.connect(t); err != nil {
		return nil, fmt.Errorf("%s: %w", opts.Name, err)
	}
	if err := k.allowIssuerDiscovery(); err != nil {
		return nil, fmt.Errorf("%s: %w", opts.Name, err)
	}
	t.Logf("kube: %s (etcd %s, kube-apiserver %s) ready in %s", opts.Name, etcdURL, k.URL, time.Since(start).Round(time.Millisecond))
	return k, nil
}

type binPaths struct{ etcd, apiserver string }

var (
	binDirOnce sync.Once
	binDir     string
	binDirErr  error
)

// binaries finds kube-apiserver and etcd ($LANYARD_K8S_BIN, or .cache/bin
// of the repository), failing the test with the make target to run.
func binaries(t testing.TB) binPaths {
	t.Helper()
	binDirOnce.Do(func() {
		if d := os.Getenv(EnvBinDir); d != "" {
			binDir = d
			return
		}
		var root string
		root, binDirErr = repoRoot()
		binDir = filepath.Join(root, ".cache", "bin")
	})
	if binDirErr != nil {
		t.Fatalf("kube: %v", binDirErr)
	}
	b := binPaths{etcd: filepath.Join(binDir, "etcd"), apiserver: filepath.Join(binDir, "kube-apiserver")}
	for _, p := range []string{b.etcd, b.apiserver} {
		if fi, err := os.Stat(p); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			t.Fatalf("kube: %s is missing: run `%s` in the repository (it builds kube-apiserver and etcd "+
				"from tools/k8s, about 12 minutes cold), or set %s to a directory holding both", p, MakeTarget, EnvBinDir)
		}
	}
	return b
}

// repoRoot is the nearest directory above the working directory whose
// go.mod is the lanyard module.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if f, err := os.Open(filepath.Join(dir, "go.mod")); err == nil {
			line, _ := bufio.NewReader(f).ReadString('\n')
			f.Close()
			if strings.TrimSpace(line) == "module github.com/lanyard-id/lanyard" {
				return dir, nil
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no lanyard go.mod above the working directory; set %s", EnvBinDir)
		}
		dir = parent
	}
}

// startAPIServer starts kube-apiserver on etcd and fills k's URLs.
func startAPIServer(t testing.TB, k *Kube, bin, etcdURL string, opts Options) error {
	tokenFile := filepath.Join(k.dir, "tokens.csv")
	if err := os.WriteFile(tokenFile, []byte(fmt.Sprintf("%s,%s,%s-uid,\"system:masters\"\n", k.adminToken, AdminUser, AdminUser)), 0o600); err != nil {
		return err
	}
	pool := x509.NewCertPool()
	caPEM, err := os.ReadFile(k.CAFile)
	if err != nil || !pool.AppendCertsFromPEM(caPEM) {
		return fmt.Errorf("read %s: %v", k.CAFile, err)
	}
	k.httpClient = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	t.Cleanup(k.httpClient.CloseIdleConnections)
	const attempts = 3
	for i := 1; ; i++ {
		ports, err := freePorts(1)
		if err != nil {
			return err
		}
		k.URL = "https://127.0.0.1:" + strconv.Itoa(ports[0])
		k.Issuer, k.JWKSURL = k.URL, k.URL+"/openid/v1/jwks"
		args := []string{
			"--etcd-servers=" + etcdURL, "--etcd-prefix=/registry",
			"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", "--secure-port=" + strconv.Itoa(ports[0]),
			"--cert-dir=" + filepath.Join(k.dir, "certs"),
			"--tls-cert-file=" + k.pki.certFile, "--tls-private-key-file=" + k.pki.keyFile,
			"--token-auth-file=" + tokenFile, "--authorization-mode=RBAC",
			"--service-account-issuer=" + k.Issuer, "--service-account-jwks-uri=" + k.JWKSURL,
			"--service-account-key-file=" + k.pki.saPubFile, "--service-account-signing-key-file=" + k.pki.saKeyFile,
			"--service-cluster-ip-range=10.96.0.0/24",
			"--endpoint-reconciler-type=none", // no kubelets, no endpoints to keep
			"--enable-priority-and-fairness=false", "--profiling=false",
		}
		p, err := startProcess(t, opts.Name+"-apiserver", bin, k.dir, append(args, opts.Args...))
		if err != nil {
			return err
		}
		err = poll(p, opts.StartTimeout, k.readyz)
		if err == nil {
			return nil
		}
		p.stop()
		if i < attempts && p.lostPortRace() {
			t.Logf("kube: kube-apiserver lost a port race, retrying: %v", err)
			continue
		}
		return fmt.Errorf("kube-apiserver: %w\n%s", err, p.tail(logTail))
	}
}

// readyz asks the API server's /readyz (anonymous, as kubelets' probes do).
func (k *Kube) readyz() error {
	resp, err := k.httpClient.Get(k.URL + "/readyz")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("/readyz: %d %s", resp.StatusCode, body)
	}
	return nil
}

// connect makes the admin clientset and kubeconfig.
func (k *Kube) connect(t testing.TB) error {
	k.Kubeconfig = filepath.Join(k.dir, "admin.kubeconfig")
	if err := k.writeKubeconfig(k.Kubeconfig, AdminUser, k.adminToken); err != nil {
		return err
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", k.Kubeconfig)
	if err != nil {
		return err
	}
	k.Config = cfg
	// Idle connections are closed when the test ends, so that no goroutine
	// outlives it.
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return err
	}
	t.Cleanup(hc.CloseIdleConnections)
	k.Client, err = kubernetes.NewForConfigAndClient(cfg, hc)
	return err
}

// writeKubeconfig writes a kubeconfig for user with a bearer token.
func (k *Kube) writeKubeconfig(path, user, token string) error {
	caPEM, err := os.ReadFile(k.CAFile)
	if err != nil {
		return err
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[k.Name] = &clientcmdapi.Cluster{Server: k.URL, CertificateAuthorityData: caPEM}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts[k.Name] = &clientcmdapi.Context{Cluster: k.Name, AuthInfo: user}
	cfg.CurrentContext = k.Name
	return clientcmd.WriteToFile(*cfg, path)
}

// allowIssuerDiscovery binds system:service-account-issuer-discovery to
// unauthenticated clients, as clusters whose issuer is fetched by
// outsiders do, so that the CA can read /.well-known/openid-configuration
// and the key set without credentials.
func (k *Kube) allowIssuerDiscovery() error {
	ctx, cancel := context.WithTimeout(context.Background(), CallTimeout)
	defer cancel()
	_, err := k.Client.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "lanyard-test:oidc-discovery"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "system:service-account-issuer-discovery"},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.GroupKind, Name: "system:unauthenticated"}},
	}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("bind issuer discovery: %w", err)
	}
	// RBAC takes effect through an informer: wait until anonymous clients
	// can read the discovery document.
	deadline := time.Now().Add(CallTimeout)
	for {
		err := k.get("/.well-known/openid-configuration")
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("OIDC discovery not readable without credentials: %w", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// get fetches path anonymously and wants 200.
func (k *Kube) get(path string) error {
	resp, err := k.httpClient.Get(k.URL + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %d", path, resp.StatusCode)
	}
	return nil
}

// SigningKey is the API server's service-account signing key, to craft
// tokens the API server itself would accept (see Resign).
func (k *Kube) SigningKey() *rsa.PrivateKey { return k.pki.saKey }

// ctx is a context for one API call.
func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), CallTimeout)
	t.Cleanup(cancel)
	return c
}

var errNotAllowed = errors.New("not allowed yet")
