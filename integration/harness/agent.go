package harness

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// UnixRule maps a peer uid to a service account in a node agent's unix
// attestor.
type UnixRule struct {
	UID            uint32
	Namespace      string
	ServiceAccount string
}

// AgentOptions configures StartAgent. The zero value is an agent on node
// "node-a" with a disk cache, socket mode 0600 and the unix attestor
// mapping the invoking uid to default/default.
type AgentOptions struct {
	// Node is the agent's node (its token is bound to pod
	// lanyard-agent-<node> there). Default "node-a".
	Node string
	// SocketMode is the socket's mode, "0600" by default. The socket's
	// directory is 0755, so "0666" lets every user reach it.
	SocketMode string
	// SVIDTTL is the TTL the agent asks for workload SVIDs (0: the CA's).
	SVIDTTL time.Duration
	// NoCache turns the disk cache off.
	NoCache bool
	// UnixRules replace the default rule (the invoking uid → default/default).
	UnixRules []UnixRule
	// Env adds KEY=value entries to the process environment.
	Env []string
	// CA, when set, points the agent at CA replicas started with StartCA
	// instead of a Dev (StartAgent's dev is then nil).
	CA *AgentCA
	// StartTimeout bounds the wait for /healthz and the socket (default
	// 30s); StopGrace is as in Options.
	StartTimeout time.Duration
	StopGrace    time.Duration
}

// AgentCA is where an agent started without a Dev finds its CA.
type AgentCA struct {
	// Addr is the agent's caAddr: a gRPC target or a comma-separated list
	// of replicas' host:port.
	Addr        string
	TrustDomain string
	// BundleFile is the bootstrap bundle.
	BundleFile string
	// IssuerDir holds the dev token issuer the CAs trust as cluster "dev"
	// (tokens.LoadOrCreateDevIssuer); the agent's token is minted from it.
	IssuerDir string
}

// NodeAgent is a running `lanyard agent` process, configured against a
// Dev's CA through a YAML file.
type NodeAgent struct {
	process
	// Node is the agent's node name.
	Node string
	// Dir holds the config, the agent's token and the disk cache.
	Dir        string
	ConfigPath string
	TokenPath  string
	// CacheFile is the SVID disk cache ("" when off).
	CacheFile string
	// SocketPath serves SDS and the Workload API, in a short 0755 directory
	// of its own (a Unix socket path must fit in 108 bytes).
	SocketPath string
	// HTTPAddr serves /healthz, /readyz and /metrics.
	HTTPAddr string
	// LogPath holds the process's stdout and stderr.
	LogPath string

	opts   AgentOptions
	logDir string
}

// agentConfig mirrors the fields of cmd/lanyard's AgentConfig the harness
// sets; the agent refuses unknown keys, so a renamed field fails loudly.
type agentConfig struct {
	CAAddr      string `yaml:"caAddr"`
	TrustDomain string `yaml:"trustDomain"`
	BundleFile  string `yaml:"bundleFile"`
	TokenFile   string `yaml:"tokenFile"`
	Cluster     string `yaml:"cluster"`
	SocketPath  string `yaml:"socketPath"`
	SocketMode  string `yaml:"socketMode"`
	HTTPAddr    string `yaml:"httpAddr"`
	CacheFile   string `yaml:"cacheFile,omitempty"`
	SVIDTTL     string `yaml:"svidTTL,omitempty"`
	Attestors   struct {
		Unix struct {
			Rules []agentUnixRule `yaml:"rules"`
		} `yaml:"unix"`
	} `yaml:"attestors"`
	Log struct {
		Level string `yaml:"level"`
	} `yaml:"log"`
}

type agentUnixRule struct {
	UID            uint32 `yaml:"uid"`
	Namespace      string `yaml:"namespace"`
	ServiceAccount string `yaml:"serviceAccount"`
}

// StartAgent starts `lanyard agent --config` against dev's CA: its own
// projected token minted by dev's issuer (lanyard/lanyard-agent bound to a
// pod on opts.Node, audience lanyard, 2h), dev's bundle.pem as bootstrap
// bundle, cluster "dev". It waits until /healthz answers and the socket is
// there (not for attestation: an agent serves its disk cache while the CA
// is down; see WaitReady), and stops the agent when the test ends.
func StartAgent(t testing.TB, dev *Dev, opts AgentOptions) *NodeAgent {
	t.Helper()
	if opts.Node == "" {
		opts.Node = "node-a"
	}
	if opts.SocketMode == "" {
		opts.SocketMode = "0600"
	}
	if opts.StartTimeout == 0 {
		opts.StartTimeout = DefaultStartTimeout
	}
	if opts.StopGrace == 0 {
		opts.StopGrace = StopGrace
	}
	if opts.UnixRules == nil {
		opts.UnixRules = []UnixRule{{UID: uint32(os.Getuid()), Namespace: "default", ServiceAccount: "default"}}
	}
	a := &NodeAgent{Node: opts.Node, Dir: t.TempDir(), opts: opts, logDir: t.TempDir()}
	a.ConfigPath = filepath.Join(a.Dir, "agent.yaml")
	a.TokenPath = filepath.Join(a.Dir, "token")
	if !opts.NoCache {
		a.CacheFile = filepath.Join(a.Dir, "cache", "svids.json")
	}
	sockDir, err := os.MkdirTemp("", "lyd-")
	if err != nil {
		t.Fatalf("harness: socket dir: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	if err := os.Chmod(sockDir, 0o755); err != nil {
		t.Fatalf("harness: socket dir: %v", err)
	}
	a.SocketPath = filepath.Join(sockDir, "agent.sock")

	issuerDir := ""
	if opts.CA != nil {
		issuerDir = opts.CA.IssuerDir
	} else {
		issuerDir = dev.Dir
	}
	tok := Token(t, issuerDir, AgentNamespace, AgentServiceAccount, "--pod", "lanyard-agent-"+opts.Node, "--node", opts.Node,
		"--audience", "lanyard", "--ttl", "2h")
	if err := os.WriteFile(a.TokenPath, []byte(tok+"\n"), 0o600); err != nil {
		t.Fatalf("harness: agent token: %v", err)
	}

	const attempts = 3
	for i := 1; ; i++ {
		addrs, err := freeAddrs(1)
		if err != nil {
			t.Fatalf("harness: %v", err)
		}
		b := a.clone()
		b.HTTPAddr = addrs[0]
		b.writeConfig(t, dev)
		err = b.start1(t)
		if err == nil {
			return b
		}
		if i < attempts && b.lostPortRace() {
			t.Logf("harness: lanyard agent lost a port race, retrying: %v", err)
			continue
		}
		t.Fatalf("harness: start lanyard agent: %v (its output follows)", err) // logged by the cleanup
	}
}

// clone is a not yet started copy of a's configuration.
func (a *NodeAgent) clone() *NodeAgent {
	return &NodeAgent{Node: a.Node, Dir: a.Dir, ConfigPath: a.ConfigPath, TokenPath: a.TokenPath,
		CacheFile: a.CacheFile, SocketPath: a.SocketPath, HTTPAddr: a.HTTPAddr, opts: a.opts, logDir: a.logDir}
}

func (a *NodeAgent) writeConfig(t testing.TB, dev *Dev) {
	t.Helper()
	var c agentConfig
	if a.opts.CA != nil {
		c.CAAddr, c.TrustDomain, c.BundleFile = a.opts.CA.Addr, a.opts.CA.TrustDomain, a.opts.CA.BundleFile
	} else {
		c.CAAddr, c.TrustDomain, c.BundleFile = dev.GRPCAddr, dev.TrustDomain.Name(), dev.BundlePath()
	}
	c.TokenFile, c.Cluster = a.TokenPath, DevCluster
	c.SocketPath, c.SocketMode, c.HTTPAddr = a.SocketPath, a.opts.SocketMode, a.HTTPAddr
	c.CacheFile = a.CacheFile
	if a.opts.SVIDTTL > 0 {
		c.SVIDTTL = a.opts.SVIDTTL.String()
	}
	for _, r := range a.opts.UnixRules {
		c.Attestors.Unix.Rules = append(c.Attestors.Unix.Rules, agentUnixRule(r))
	}
	c.Log.Level = "debug"
	raw, err := yaml.Marshal(c)
	if err != nil {
		t.Fatalf("harness: agent config: %v", err)
	}
	if err := os.WriteFile(a.ConfigPath, raw, 0o600); err != nil {
		t.Fatalf("harness: agent config: %v", err)
	}
}

// start1 starts the process once and waits for it.
func (a *NodeAgent) start1(t testing.TB) error {
	a.name = "lanyard agent"
	a.grace = a.opts.StopGrace
	logFile, err := os.CreateTemp(a.logDir, "lanyard-agent-*.log")
	if err != nil {
		return err
	}
	defer logFile.Close()
	a.LogPath = logFile.Name()
	if err := a.start(Binary(t), []string{"agent", "--config", a.ConfigPath}, a.opts.Env, logFile); err != nil {
		return err
	}
	a.cleanup(t, a.Node+" "+a.SocketPath)
	if err := a.waitStarted(a.opts.StartTimeout); err != nil {
		a.Stop()
		return err
	}
	return nil
}

// waitStarted waits for /healthz and the socket.
func (a *NodeAgent) waitStarted(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	for {
		if err := a.exitedErr(); err != nil {
			return err
		}
		code, _, err := httpGet(a.HTTPAddr, "/healthz")
		switch {
		case err != nil:
			last = err
		case code != http.StatusOK:
			last = fmt.Errorf("/healthz answered %d", code)
		default:
			fi, err := os.Stat(a.SocketPath)
			if err == nil && fi.Mode()&os.ModeSocket != 0 {
				return nil
			}
			last = fmt.Errorf("socket %s: %v", a.SocketPath, err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not started after %s: %v", timeout, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Restart starts the agent again with the same config, socket, HTTP
// address and disk cache, after Stop or Kill. It fails the test if a is
// still running.
func (a *NodeAgent) Restart(t testing.TB) *NodeAgent {
	t.Helper()
	if a.Running() {
		t.Fatal("harness: Restart of a lanyard agent that is still running")
	}
	b := a.clone()
	if err := b.start1(t); err != nil {
		t.Fatalf("harness: restart lanyard agent: %v (its output follows)", err)
	}
	return b
}

// WaitReady waits until /readyz answers 200: the agent holds an agent SVID.
func (a *NodeAgent) WaitReady(t testing.TB, timeout time.Duration) {
	t.Helper()
	if err := a.ready(a.HTTPAddr, timeout, nil); err != nil {
		t.Fatalf("harness: lanyard agent %s: %v", a.Node, err)
	}
}

// Readyz returns the status code of GET /readyz (0 when unreachable).
func (a *NodeAgent) Readyz(t testing.TB) int {
	t.Helper()
	code, _, err := httpGet(a.HTTPAddr, "/readyz")
	if err != nil {
		t.Logf("harness: agent /readyz: %v", err)
	}
	return code
}

// Metric is Dev.Metric on the agent's /metrics.
func (a *NodeAgent) Metric(t testing.TB, name string, labels ...string) float64 {
	t.Helper()
	return scrapeMetric(t, a.HTTPAddr, name, labels)
}
