package integration

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/lanyard-id/lanyard/agent"
	"github.com/lanyard-id/lanyard/ca/tokens"
	"github.com/lanyard-id/lanyard/integration/harness"
	"github.com/lanyard-id/lanyard/internal/pgtest"
	cav1 "github.com/lanyard-id/lanyard/proto/lanyard/ca/v1"
)

const (
	// haTTL outlives the database outage with room for the renewal after it.
	haTTL = 40 * time.Second
	// haOutage is how long PostgreSQL is down.
	haOutage = 10 * time.Second
	// haResume: issuance resumes within this long of each recovery.
	haResume = 10 * time.Second
)

// haEnv is a PostgreSQL server, a dev token issuer and the configuration
// CA replicas share.
type haEnv struct {
	pg        *pgtest.Server
	dsn       string
	iss       *tokens.DevIssuer
	issuerDir string
	sealKey   string
}

func newHAEnv(t *testing.T) *haEnv {
	pg, err := pgtest.Start(t.Context(), pgtest.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, pg.Close()) })
	require.NoError(t, pg.Exec(t.Context(), "CREATE DATABASE lanyard"))
	e := &haEnv{pg: pg, dsn: pg.DSN("lanyard"), issuerDir: t.TempDir()}
	e.iss, err = tokens.LoadOrCreateDevIssuer(e.issuerDir, harness.DevIssuer)
	require.NoError(t, err)
	key := make([]byte, 32)
	_, err = rand.Read(key)
	require.NoError(t, err)
	e.sealKey = filepath.Join(t.TempDir(), "seal.key")
	require.NoError(t, os.WriteFile(e.sealKey, key, 0o600))
	return e
}

// config is a replica's `lanyard ca` configuration; upstream nil means the
// shared self-signed root.
func (e *haEnv) config(upstream map[string]any) map[string]any {
	if upstream == nil {
		upstream = map[string]any{"type": "selfsigned", "selfsigned": map[string]any{"sealKeyFile": e.sealKey}}
	}
	return map[string]any{
		"servingIPs": []string{"127.0.0.1"},
		"store": map[string]any{"type": "postgres", "postgres": map[string]any{
			"dsn": e.dsn, "statementTimeout": "2s", "maxConns": 8}},
		"upstream": upstream,
		"clusters": []map[string]any{{"name": harness.DevCluster, "issuer": harness.DevIssuer,
			"jwksFile": e.iss.JWKSPath()}},
		"agents": map[string]any{"serviceAccounts": []string{harness.AgentNamespace + "/" + harness.AgentServiceAccount},
			"trustUnixAttestation": true},
		"log": map[string]any{"level": "info"},
	}
}

// recorded returns the serials among serials that the store holds.
func (e *haEnv) recorded(t *testing.T, serials []string) map[string]bool {
	conn, err := pgx.Connect(t.Context(), e.dsn)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	rows, err := conn.Query(t.Context(), `SELECT serial FROM certificates WHERE serial = ANY($1)`, serials)
	require.NoError(t, err)
	got, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	out := map[string]bool{}
	for _, s := range got {
		out[s] = true
	}
	return out
}

// bundleChangedAt is when a replica last changed the stored bundle of td.
func (e *haEnv) bundleChangedAt(t *testing.T, td spiffeid.TrustDomain) time.Time {
	conn, err := pgx.Connect(t.Context(), e.dsn)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	var ns int64
	require.NoError(t, conn.QueryRow(t.Context(), `SELECT updated_at FROM bundles WHERE trust_domain = $1`, td.Name()).Scan(&ns))
	return time.Unix(0, ns)
}

// loadResult is one BatchSignSVIDs entry of the load driver.
type loadResult struct {
	start  time.Time // when the call began
	at     time.Time // when it answered
	serial string    // "" when it failed
	code   codes.Code
}

// loadDriver issues continuously through the real agent client (round
// robin over the replicas, retrying UNAVAILABLE on another one), as an
// attested agent relaying workload tokens.
type loadDriver struct {
	mu      sync.Mutex
	results []loadResult
}

func (l *loadDriver) snapshot() []loadResult {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]loadResult(nil), l.results...)
}

// firstOKAfter is the first success after t0, if any.
func (l *loadDriver) firstOKAfter(t0 time.Time) (time.Time, bool) {
	for _, r := range l.snapshot() {
		if r.serial != "" && r.at.After(t0) {
			return r.at, true
		}
	}
	return time.Time{}, false
}

func startHALoad(t *testing.T, e *haEnv, addrs string, td spiffeid.TrustDomain, bundlePath string) *loadDriver {
	const node = "load-node"
	c, err := agent.NewClient(agent.ClientConfig{
		Addr: addrs, TrustDomain: td, Bundle: harness.LoadBundle(t, td, bundlePath), Cluster: harness.DevCluster,
		Token: func() (string, error) {
			return e.iss.Mint(tokens.DevClaims{Namespace: harness.AgentNamespace, ServiceAccount: harness.AgentServiceAccount,
				Audiences: []string{"lanyard"}, PodName: "lanyard-agent-" + node, NodeName: node})
		},
	})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	require.NoError(t, c.Attest(harness.Context(t)))
	csr := harness.NewCSR(t, harness.CSROptions{})
	l := &loadDriver{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ctx.Err() == nil; i++ {
			var reqs []*cav1.SVIDRequest
			for j := range 4 {
				tok, err := e.iss.Mint(tokens.DevClaims{Namespace: "load", ServiceAccount: fmt.Sprint("w", j),
					Audiences: []string{"lanyard"}, PodName: fmt.Sprintf("w%d-%d", j, i), NodeName: node})
				if err != nil {
					panic(err)
				}
				reqs = append(reqs, &cav1.SVIDRequest{Id: fmt.Sprint(j), Caller: &cav1.SVIDRequest_Token{Token: tok}, Csr: csr.DER})
			}
			callCtx, callCancel := context.WithTimeout(ctx, 5*time.Second)
			start := time.Now()
			res, err := c.BatchSign(callCtx, reqs)
			callCancel()
			now := time.Now()
			l.mu.Lock()
			if err != nil {
				l.results = append(l.results, loadResult{start: start, at: now, code: status.Code(err)})
			}
			for _, r := range res {
				lr := loadResult{start: start, at: now, code: codes.Code(r.GetCode())}
				if chain := r.GetSvid().GetCertChain(); len(chain) > 0 {
					leaf, perr := x509.ParseCertificate(chain[0])
					if perr == nil {
						lr.serial = serial(leaf)
					}
				}
				l.results = append(l.results, lr)
			}
			l.mu.Unlock()
			select {
			case <-ctx.Done():
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return l
}

// TestHAReplicas: three `lanyard ca` replicas on one PostgreSQL, three
// `lanyard agent` processes and a load driver balancing over the replicas
// with the agent's client. One replica is SIGKILLed mid-load, then
// PostgreSQL is stopped for haOutage and started again. From the agents'
// side: every certificate they received is in the store, their workloads
// held a valid SVID throughout, and issuance resumed within haResume of
// each recovery. Then a fourth replica with a root of its own joins: the
// bundle change reaches the agents, which are connected to other replicas.
func TestHAReplicas(t *testing.T) {
	e := newHAEnv(t)
	var cas []*harness.CA
	for range 3 {
		cas = append(cas, harness.StartCA(t, harness.CAOptions{Config: e.config(nil)}))
	}
	td := cas[0].TrustDomain
	bundle := cas[0].Bundle(t)
	for _, c := range cas[1:] {
		require.Equal(t, bundle.X509Authorities(), c.Bundle(t).X509Authorities(), "replicas agree on one root")
	}
	var addrs []string
	for _, c := range cas {
		addrs = append(addrs, c.GRPCAddr)
	}
	target := strings.Join(addrs, ",")
	want := spiffeid.RequireFromSegments(td, "ns", "default", "sa", "default")

	var (
		agents  []*harness.NodeAgent
		watches []*x509Watch
	)
	for i := range 3 {
		a := harness.StartAgent(t, nil, harness.AgentOptions{Node: fmt.Sprint("node-", i), SVIDTTL: haTTL,
			CA: &harness.AgentCA{Addr: target, TrustDomain: td.Name(), BundleFile: cas[0].BundlePath(), IssuerDir: e.issuerDir}})
		a.WaitReady(t, harness.CallTimeout)
		w := watchX509(t, workloadClient(t, a.SocketPath))
		u := w.waitFor(t, harness.CallTimeout, "first SVID", func(u x509Update) bool { return u.svid != nil })
		requireSVID(t, u.svid, bundle, want)
		agents, watches = append(agents, a), append(watches, w)
	}
	load := startHALoad(t, e, target, td, cas[0].BundlePath())
	eventually(t, harness.CallTimeout, "load is issuing", func() bool {
		n := 0
		for _, r := range load.snapshot() {
			if r.serial != "" {
				n++
			}
		}
		return n >= 40
	})

	// 1. SIGKILL one replica mid-load.
	cas[1].Kill()
	killed := time.Now()
	eventually(t, haResume, "issuance after the kill", func() bool {
		at, ok := load.firstOKAfter(killed.Add(time.Second))
		return ok && at.Sub(killed) < haResume
	})
	at, _ := load.firstOKAfter(killed)
	t.Logf("replica killed; next certificate %s later", at.Sub(killed).Round(time.Millisecond))

	// 2. PostgreSQL down for haOutage: issuance answers Unavailable, the
	// replicas are not ready, nothing leaves unrecorded.
	require.NoError(t, e.pg.Pause(t.Context()))
	down := time.Now()
	for _, c := range []*harness.CA{cas[0], cas[2]} {
		eventually(t, haOutage-time.Since(down), "/readyz false while the database is down", func() bool {
			code, _, _ := httpGetReadyz(c.HTTPAddr)
			return code == 503
		})
	}
	eventually(t, haOutage-time.Since(down), "issuance answers Unavailable", func() bool {
		for _, r := range load.snapshot() {
			if r.at.After(down) && r.code == codes.Unavailable {
				return true
			}
		}
		return false
	})
	// The outage itself lasts haOutage; meanwhile nothing may succeed.
	for time.Since(down) < haOutage {
		time.Sleep(100 * time.Millisecond)
	}
	// The window in which nothing may succeed ends when the restart begins:
	// pg_ctl start returns a little after the server accepts connections.
	resuming := time.Now()
	require.NoError(t, e.pg.Resume(t.Context()))
	up := time.Now()
	for _, r := range load.snapshot() {
		if r.start.After(down) && r.at.Before(resuming) {
			require.NotEqual(t, codes.OK, r.code, "a certificate issued while the database was down (call began %s after the stop, answered %s after)",
				r.start.Sub(down), r.at.Sub(down))
			require.Contains(t, []codes.Code{codes.Unavailable, codes.DeadlineExceeded}, r.code)
		}
	}
	eventually(t, haResume, "issuance after the database is back", func() bool {
		_, ok := load.firstOKAfter(up)
		return ok
	})
	at, _ = load.firstOKAfter(up)
	t.Logf("database back; next certificate %s later", at.Sub(up).Round(time.Millisecond))
	for _, c := range []*harness.CA{cas[0], cas[2]} {
		eventually(t, haResume, "/readyz true again", func() bool {
			code, _, _ := httpGetReadyz(c.HTTPAddr)
			return code == 200
		})
	}
	// Every agent renews (its renewals came due during the outage or come
	// due now) and serves valid SVIDs.
	for i, w := range watches {
		w.waitFor(t, haTTL, "an SVID issued after the database came back", func(u x509Update) bool {
			return u.svid != nil && u.svid.Certificates[0].NotBefore.After(up.Add(-15*time.Second)) && u.at.After(up)
		})
		t.Logf("agent %d renewed after the outage", i)
	}

	// 3. A replica with a root of its own joins; the bundle change reaches
	// the agents through the replicas they are connected to.
	rootDir := t.TempDir()
	newRoot := writeRoot(t, rootDir, td)
	joined := time.Now() // it publishes its root while it starts
	cas = append(cas, harness.StartCA(t, harness.CAOptions{Config: e.config(map[string]any{"type": "disk",
		"disk": map[string]any{"certFile": filepath.Join(rootDir, "root.pem"), "keyFile": filepath.Join(rootDir, "root-key.pem")}})}))
	changed := e.bundleChangedAt(t, td)
	require.True(t, changed.After(joined), "the stored bundle changed when the new replica started")
	for i, w := range watches {
		u := w.waitFor(t, time.Until(changed.Add(time.Second)), "the new root in the agent's bundle within a second", func(u x509Update) bool {
			b, err := u.bundles.GetX509BundleForTrustDomain(td)
			return err == nil && b.HasX509Authority(newRoot)
		})
		t.Logf("agent %d got the new root %s after the stored bundle changed", i, u.at.Sub(changed).Round(time.Millisecond))
		require.Less(t, u.at.Sub(changed), time.Second)
	}

	// 4. From the agents' side: every certificate received is recorded,
	// and workloads never went without a valid SVID.
	var serials []string
	for _, r := range load.snapshot() {
		if r.serial != "" {
			serials = append(serials, r.serial)
		}
	}
	for i, w := range watches {
		ups := w.snapshot()
		var prev *x509Update
		for j := range ups {
			u := ups[j]
			if u.svid == nil {
				continue
			}
			serials = append(serials, serial(u.svid.Certificates[0]))
			if prev != nil {
				require.True(t, u.at.Before(prev.svid.Certificates[0].NotAfter),
					"agent %d: SVID %s expired at %s before the next arrived at %s", i,
					serial(prev.svid.Certificates[0]), prev.svid.Certificates[0].NotAfter, u.at)
			}
			prev = &ups[j]
		}
		require.NotNil(t, prev)
		require.True(t, time.Now().Before(prev.svid.Certificates[0].NotAfter), "agent %d's SVID is valid at the end", i)
	}
	got := e.recorded(t, serials)
	var missing []string
	for _, s := range serials {
		if !got[s] {
			missing = append(missing, s)
		}
	}
	require.Empty(t, missing, "certificates received but not in the store")
	t.Logf("%d certificates received by the agents and the load driver, all in the store", len(serials))
}

func httpGetReadyz(addr string) (int, []byte, error) { return harness.HTTPGet(addr, "/readyz") }

// writeRoot writes a new self-signed root (root.pem, root-key.pem) for the
// disk upstream and returns it.
func writeRoot(t *testing.T, dir string, td spiffeid.TrustDomain) *x509.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "second root " + td.Name()},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	require.NoError(t, err)
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "root.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "root-key.pem"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600))
	c, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return c
}
