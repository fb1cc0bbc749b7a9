package sds

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/lanyard-id/lanyard/agent"
	"github.com/lanyard-id/lanyard/agent/sds/sdstest"
	"github.com/lanyard-id/lanyard/ca/catest"
)

// quietWindow is how long a test watches for responses that must not come.
const quietWindow = 250 * time.Millisecond

func next(t *testing.T, c *sdstest.Client) *sdstest.Response {
	t.Helper()
	select {
	case r, ok := <-c.Responses():
		require.True(t, ok, "client stopped: %v", c.Err())
		require.NoError(t, r.NACK, "response the client had to reject")
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("no response within 5s")
		return nil
	}
}

// nextNACKed is next for a response the test made the client reject.
func nextNACKed(t *testing.T, c *sdstest.Client) *sdstest.Response {
	t.Helper()
	select {
	case r := <-c.Responses():
		require.Error(t, r.NACK)
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("no response within 5s")
		return nil
	}
}

func quiet(t *testing.T, c *sdstest.Client) {
	t.Helper()
	select {
	case r := <-c.Responses():
		t.Fatalf("unexpected response %s with %v", r.Version, r.Names())
	case <-time.After(quietWindow):
	}
}

func pemOf(t *testing.T, svid *x509svid.SVID) (chain, key []byte) {
	t.Helper()
	chain, key, err := svid.Marshal()
	require.NoError(t, err)
	return chain, key
}

func requireCert(t *testing.T, s *tlsv3.Secret, svid *x509svid.SVID) {
	t.Helper()
	require.NotNil(t, s)
	chain, key := pemOf(t, svid)
	require.Equal(t, string(chain), string(s.GetTlsCertificate().GetCertificateChain().GetInlineBytes()))
	require.Equal(t, string(key), string(s.GetTlsCertificate().GetPrivateKey().GetInlineBytes()))
	require.Contains(t, string(key), "-----BEGIN PRIVATE KEY-----") // PKCS#8
}

func requireRoots(t *testing.T, s *tlsv3.Secret, ca *catest.CA) {
	t.Helper()
	require.NotNil(t, s)
	require.Equal(t, string(encodeCerts(ca.Bundle().X509Authorities())),
		string(s.GetValidationContext().GetTrustedCa().GetInlineBytes()))
}

func TestStreamSubscribeACK(t *testing.T) {
	h := newHarness(t, Config{})
	c := h.client(sdstest.Config{Token: "alice-token", Names: []string{"default", "ROOTCA"}})

	r := next(t, c)
	require.Equal(t, SecretTypeURL, r.Raw.GetTypeUrl())
	require.NotEmpty(t, r.Version)
	require.NotEmpty(t, r.Nonce)
	require.Equal(t, []string{"default", "ROOTCA"}, r.Names())
	requireCert(t, r.Secret("default"), h.ids.Identity(alice).Current())
	requireRoots(t, r.Secret("ROOTCA"), h.ca)

	quiet(t, c) // the ACK asks for nothing new
	require.Equal(t, r.Version, c.Acked())
	require.Equal(t, 1.0, testutil.ToFloat64(h.metrics.Streams))
	require.Equal(t, 1.0, testutil.ToFloat64(h.metrics.Pushes))
	require.Equal(t, 1.0, testutil.ToFloat64(h.metrics.SVIDsServed))
	require.Zero(t, testutil.ToFloat64(h.metrics.NACKs))

	c.Close()
	require.Eventually(t, func() bool { return h.ids.Live() == 0 }, 5*time.Second, 10*time.Millisecond,
		"the stream's subscription is closed")
	require.Eventually(t, func() bool { return testutil.ToFloat64(h.metrics.Streams) == 0 }, 5*time.Second, 10*time.Millisecond)
}

func TestStreamPushesRotationAndBundleChange(t *testing.T) {
	h := newHarness(t, Config{})
	c := h.client(sdstest.Config{Token: "alice-token", Names: []string{"default", "ROOTCA"}})
	first := next(t, c)

	rotated := h.ca.Issue(t, alice)
	start := time.Now()
	h.ids.SetSVID(alice, rotated)
	r := next(t, c)
	require.Less(t, time.Since(start), time.Second, "rotation pushed within 1s")
	require.NotEqual(t, first.Version, r.Version)
	require.NotEqual(t, first.Nonce, r.Nonce)
	requireCert(t, r.Secret("default"), rotated)

	nextRoot := catest.New(t, catest.Options{TrustDomain: tdLocal})
	start = time.Now()
	h.ids.SetBundles(nextRoot.Bundle(), h.fed.Bundle())
	r = next(t, c)
	require.Less(t, time.Since(start), time.Second, "bundle change pushed within 1s")
	requireRoots(t, r.Secret("ROOTCA"), nextRoot)

	// Another workload's rotation and a wake-up without change push nothing.
	h.ids.SetSVID(bob, h.ca.Issue(t, bob))
	h.ids.Poke()
	quiet(t, c)
}

func TestStreamNACKNotResent(t *testing.T) {
	h := newHarness(t, Config{})
	c := h.client(sdstest.Config{Token: "alice-token", Names: []string{"default"}})
	first := next(t, c)

	c.NACKNext("certificate rejected by test")
	h.ids.SetSVID(alice, h.ca.Issue(t, alice))
	bad := nextNACKed(t, c)
	require.NotEqual(t, first.Version, bad.Version)

	// Nothing answers the NACK, not even a wake-up of the subscription.
	h.ids.Poke()
	quiet(t, c)
	require.Eventually(t, func() bool {
		return h.logs.count("client rejected secrets", "certificate rejected by test", "version="+bad.Version) == 1
	}, 5*time.Second, 10*time.Millisecond)
	require.Equal(t, 1.0, testutil.ToFloat64(h.metrics.NACKs))
	require.Equal(t, first.Version, c.Acked(), "the client keeps the last version it accepted")

	// The next change is pushed, and ACKed.
	good := h.ca.Issue(t, alice)
	h.ids.SetSVID(alice, good)
	r := next(t, c)
	require.NotEqual(t, bad.Version, r.Version)
	requireCert(t, r.Secret("default"), good)
	quiet(t, c)
	require.Equal(t, r.Version, c.Acked())
}

func TestStreamSubscriptionChange(t *testing.T) {
	h := newHarness(t, Config{})
	c := h.client(sdstest.Config{Token: "alice-token", Names: []string{"default"}})
	require.Equal(t, []string{"default"}, next(t, c).Names())

	require.NoError(t, c.Subscribe("default", "ROOTCA"))
	require.Equal(t, []string{"default", "ROOTCA"}, next(t, c).Names())

	require.NoError(t, c.Subscribe("ROOTCA"))
	require.Equal(t, []string{"ROOTCA"}, next(t, c).Names())

	// Subscribing again to a dropped name sends it again.
	require.NoError(t, c.Subscribe("ROOTCA", "default"))
	r := next(t, c)
	require.Equal(t, []string{"ROOTCA", "default"}, r.Names())
	requireCert(t, r.Secret("default"), h.ids.Identity(alice).Current())
	quiet(t, c)
}

func TestStreamUnknownNames(t *testing.T) {
	h := newHarness(t, Config{})
	names := []string{"default", "file-cert:/etc/certs/cert.pem", "spiffe://nowhere.test", "spiffe://cluster.local/ns/default/sa/bob"}
	c := h.client(sdstest.Config{Token: "alice-token", Names: names})
	r := next(t, c)
	require.Equal(t, []string{"default"}, r.Names())
	require.Equal(t, 1, h.logs.count("resources not served", "file-cert:/etc/certs/cert.pem", "spiffe://nowhere.test", bob.String()))

	// The stream lives on: rotations are pushed, the warning is not repeated.
	h.ids.SetSVID(alice, h.ca.Issue(t, alice))
	require.Equal(t, []string{"default"}, next(t, c).Names())
	require.Equal(t, 1, h.logs.count("resources not served"))

	// Only unknown names: nothing to answer.
	require.NoError(t, c.Subscribe("no-such-secret"))
	quiet(t, c)
	require.Eventually(t, func() bool { return h.logs.count("resources not served", "no-such-secret") == 1 },
		5*time.Second, 10*time.Millisecond)
}

func TestStreamSPIFFEIDNames(t *testing.T) {
	h := newHarness(t, Config{})
	c := h.client(sdstest.Config{Token: "alice-token", Names: []string{alice.String(), bob.String()}})
	r := next(t, c)
	require.Equal(t, []string{alice.String()}, r.Names(), "own identity only")
	requireCert(t, r.Secret(alice.String()), h.ids.Identity(alice).Current())

	_, bobKey := pemOf(t, h.ids.Identity(bob).Current())
	for _, s := range r.Secrets {
		require.False(t, bytes.Equal(s.GetTlsCertificate().GetPrivateKey().GetInlineBytes(), bobKey), "bob's key served to alice")
	}
	require.Equal(t, 0, h.ids.Subscribed(bob), "alice's stream never touched bob's subscription")
}

func TestStreamAllResources(t *testing.T) {
	h := newHarness(t, Config{})
	c := h.client(sdstest.Config{Token: "alice-token"}) // empty resource_names
	r := next(t, c)
	require.Equal(t, []string{alice.String(), "spiffe://cluster.local", "spiffe://example.org"}, r.Names())
	requireCert(t, r.Secret(alice.String()), h.ids.Identity(alice).Current())
	requireRoots(t, r.Secret("spiffe://cluster.local"), h.ca)
	requireRoots(t, r.Secret("spiffe://example.org"), h.fed)
}

func TestStreamPendingFirstSVID(t *testing.T) {
	h := newHarness(t, Config{})
	h.ids.SetSVID(alice, nil)

	// ROOTCA is answered; default waits for the SVID, never empty.
	c := h.client(sdstest.Config{Token: "alice-token", Names: []string{"default", "ROOTCA"}})
	require.Equal(t, []string{"ROOTCA"}, next(t, c).Names())
	quiet(t, c)

	svid := h.ca.Issue(t, alice)
	h.ids.SetSVID(alice, svid)
	r := next(t, c)
	require.Equal(t, []string{"default", "ROOTCA"}, r.Names())
	requireCert(t, r.Secret("default"), svid)

	// A stream asking for the certificate only gets no response at all.
	h.ids.SetSVID(alice, nil)
	only := h.client(sdstest.Config{Token: "alice-token", Names: []string{"default"}})
	quiet(t, only)
	h.ids.SetSVID(alice, svid)
	requireCert(t, next(t, only).Secret("default"), svid)
}

func TestStreamRefused(t *testing.T) {
	for _, tt := range []struct {
		name  string
		token string
		setup func(h *harness)
	}{
		{name: "no token, no attestation", token: ""},
		{name: "unknown token", token: "mallory-token"},
		{name: "subscription denied", token: "carol-token", setup: func(h *harness) {
			h.ids.Refuse(carol, fmt.Errorf("subscribe: %w", agent.ErrNotIdentified))
		}},
		{name: "identity refused by the CA", token: "carol-token", setup: func(h *harness) {
			h.ids.Deny(carol, fmt.Errorf("%w: PermissionDenied", agent.ErrDenied))
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, Config{})
			if tt.setup != nil {
				tt.setup(h)
			}
			c := h.client(sdstest.Config{Token: tt.token, Names: []string{"default"}})
			select {
			case <-c.Done():
			case <-time.After(5 * time.Second):
				t.Fatal("stream not ended")
			}
			require.Equal(t, codes.PermissionDenied, status.Code(c.Err()), "%v", c.Err())
			require.Zero(t, h.ids.Live())
		})
	}
}

func TestStreamDeniedMidStream(t *testing.T) {
	h := newHarness(t, Config{})
	c := h.client(sdstest.Config{Token: "alice-token", Names: []string{"default"}})
	next(t, c)
	h.ids.Deny(alice, fmt.Errorf("%w: InvalidArgument", agent.ErrDenied))
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("stream not ended")
	}
	require.Equal(t, codes.PermissionDenied, status.Code(c.Err()))
}

func TestStreamStaleNonceIgnored(t *testing.T) {
	h := newHarness(t, Config{})
	c := h.client(sdstest.Config{Token: "alice-token", Names: []string{"default", "ROOTCA"}})
	r := next(t, c)
	quiet(t, c) // the ACK has been processed

	// A request answering an older response: ignored whole, names too.
	require.NoError(t, c.Send(&discoveryv3.DiscoveryRequest{
		VersionInfo: r.Version, ResponseNonce: "stale-nonce", ResourceNames: []string{"ROOTCA"},
	}))
	quiet(t, c)
	require.Eventually(t, func() bool { return h.logs.count("stale nonce; request ignored", "stale-nonce") == 1 },
		5*time.Second, 10*time.Millisecond)

	h.ids.SetSVID(alice, h.ca.Issue(t, alice))
	require.Equal(t, []string{"default", "ROOTCA"}, next(t, c).Names(), "the subscription did not change")
}

func TestStreamReconnect(t *testing.T) {
	h := newHarness(t, Config{})
	c := h.client(sdstest.Config{Token: "alice-token", Names: []string{"default"}, Reconnect: 50 * time.Millisecond})
	first := next(t, c)

	// A new stream is always answered, even when it already has the version.
	c.Reconnect()
	r := next(t, c)
	require.Equal(t, first.Version, r.Version, "versions follow content")
	require.NotEqual(t, first.Nonce, r.Nonce)
	require.Equal(t, 2, c.Streams())

	// Server restart: the client reconnects and gets the current state,
	// including a rotation that happened while the server was down.
	h.stop()
	rotated := h.ca.Issue(t, alice)
	h.ids.SetSVID(alice, rotated)
	h.start()
	r = next(t, c)
	requireCert(t, r.Secret("default"), rotated)
	require.Equal(t, 3, c.Streams())
	require.Equal(t, r.Version, c.Acked())
}

func TestDeltaSecretsUnimplemented(t *testing.T) {
	h := newHarness(t, Config{})
	stream, err := secretv3.NewSecretDiscoveryServiceClient(h.conn).DeltaSecrets(t.Context())
	require.NoError(t, err)
	_, err = stream.Recv()
	require.Equal(t, codes.Unimplemented, status.Code(err))
}

// A token that stopped working ends the stream with Unauthenticated, so
// that Envoy reconnects with the token it has now.
func TestStreamCredentialExpired(t *testing.T) {
	h := newHarness(t, Config{})
	c := h.client(sdstest.Config{Token: "alice-token", Names: []string{"default"}})
	next(t, c)
	h.ids.Deny(alice, fmt.Errorf("%w: token expired", agent.ErrCredentialExpired))
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("stream not ended")
	}
	require.Equal(t, codes.Unauthenticated, status.Code(c.Err()))
}
