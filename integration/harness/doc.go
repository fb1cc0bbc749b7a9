// Package harness runs Lanyard processes for end-to-end tests.
//
// A test binary that uses it calls Main from its TestMain; the lanyard
// binary is then built once (or taken from $LANYARD_BIN) and removed when
// the tests end, and leaked goroutines fail the run:
//
//	func TestMain(m *testing.M) { harness.Main(m) }
//
// StartDev starts `lanyard dev` on free 127.0.0.1 ports in its own process
// group and stops it when the test ends (SIGTERM, then SIGKILL after 5s; on
// Linux the kernel also kills it if the test binary dies); its output is
// logged when the test fails, and a CA that exits on its own fails the
// test. Stop and Kill end it earlier, for restart tests; Restart starts it
// again on the same directory, ports and flags. Unless started with
// --agent=false it runs a node agent too (socket SocketPath, metrics
// AgentMetric), and StartDev returns once that agent is attested.
//
// StartAgent runs a separate `lanyard agent` process against a Dev's CA,
// from a YAML config it writes (its own token from the dev issuer, the
// unix attestor, a disk cache, a socket in a short 0755 directory); a
// NodeAgent has the same Stop, Kill and Restart. CallAs runs a Workload API
// and SDS client of an agent socket as another user, in a copy of the test
// binary (Main turns into that client when $LANYARD_HARNESS_PEER_SOCKET is
// set).
//
// A Dev then gives clients and probes: Token and AgentToken mint projected
// tokens with the real `lanyard dev token` CLI, and IssuerKey and
// DecodeToken let a test craft its own; Client and DialAgent dial the CA's
// gRPC API verifying its certificate against bundle.pem and its SPIFFE ID
// with go-spiffe; AttestAgent and NewAgent turn an agent token into an
// agent SVID; NewCSR and FakeRSACSR build CSRs of any key type, allowed or
// not; CertificateCount, MissingCertificates, IssuedAt, Metric, Healthz
// and Readyz look at the process from outside (store file read-only,
// /metrics).
package harness
