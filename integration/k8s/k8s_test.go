package k8s

import (
	"crypto/rand"
	"crypto/rsa"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"

	"github.com/lanyard-id/lanyard/integration/harness"
	"github.com/lanyard-id/lanyard/integration/harness/kube"
)

// TestKubernetes runs every check against one CA configured with both
// clusters: each cluster's tokens verified by its own issuer (east by OIDC
// discovery + JWKS with the bound-pod check, west by TokenReview), and
// refused by the other's.
func TestKubernetes(t *testing.T) {
	e := startEnv(t)
	// After every subtest, before the CA stops: no token in its log (debug
	// level), whatever was refused or accepted.
	t.Cleanup(func() {
		out := e.ca.Output()
		require.NotEmpty(t, out)
		require.NotContains(t, out, "eyJhbGciOi", "the CA logged something that looks like a JWT")
	})

	// Not parallel: it reads counters the other subtests move.
	t.Run("token metrics count calls and cache hits", func(t *testing.T) {
		for _, c := range e.clusters() {
			a := e.newAgent(t, c, nodeA)
			_, token := workload(t, c, "metrics", nodeA)
			labels := []string{`cluster="` + c.name + `"`, `method="` + c.method + `"`}
			metric := func(name string) float64 { return e.ca.Metric(t, name, labels...) }
			requests, calls, hits := metric("lanyard_ca_token_requests_total"), metric("lanyard_ca_token_calls_total"), metric("lanyard_ca_token_cache_hits_total")
			for range 3 {
				entry, csr := tokenEntry(t, token)
				e.requireSVID(t, a.sign(t, entry), csr, e.ca.WorkloadID(appNS, "metrics"))
			}
			require.Equal(t, requests+3, metric("lanyard_ca_token_requests_total"), c.name)
			require.Equal(t, calls+1, metric("lanyard_ca_token_calls_total"), "%s: one verification (TokenReview) for three requests", c.name)
			require.Equal(t, hits+2, metric("lanyard_ca_token_cache_hits_total"), "%s: two answered from the cache", c.name)
		}
	})

	for _, c := range e.clusters() {
		t.Run(c.name+"/"+c.method, func(t *testing.T) {
			t.Parallel()
			testCluster(t, e, c)
		})
	}

	t.Run("two clusters, each its own issuer", func(t *testing.T) {
		t.Parallel()
		east, west := e.newAgent(t, e.east, nodeA), e.newAgent(t, e.west, nodeA)
		require.NotEqual(t, east.svid.ID, west.svid.ID, "agent IDs name the cluster")
		_, eastToken := workload(t, e.east, "web", nodeA)
		_, westToken := workload(t, e.west, "web", nodeA)
		for _, tt := range []struct {
			name  string
			agent *agent
			token string
			code  codes.Code
		}{
			{"east token through an east agent", east, eastToken, codes.OK},
			{"west token through a west agent", west, westToken, codes.OK},
			{"west token through an east agent", east, westToken, codes.Unauthenticated},
			{"east token through a west agent", west, eastToken, codes.Unauthenticated},
		} {
			t.Run(tt.name, func(t *testing.T) {
				entry, csr := tokenEntry(t, tt.token)
				res := tt.agent.sign(t, entry)
				if tt.code == codes.OK {
					e.requireSVID(t, res, csr, e.ca.WorkloadID(appNS, "web"))
					return
				}
				requireCode(t, tt.code, res)
			})
		}
		// AttestAgent picks the verifier by the cluster the request names:
		// none means the first configured (east), an unknown one is refused.
		_, westAgentToken := agentPod(t, e.west, nodeA)
		_, err := e.ca.AttestAgent(t, "", westAgentToken, harness.NewCSR(t, harness.CSROptions{}))
		requireStatus(t, codes.Unauthenticated, err)
		_, err = e.ca.AttestAgent(t, "north", westAgentToken, harness.NewCSR(t, harness.CSROptions{}))
		requireStatus(t, codes.Unauthenticated, err)
		_, eastAgentToken := agentPod(t, e.east, nodeA)
		svid, err := e.ca.AttestAgent(t, "", eastAgentToken, harness.NewCSR(t, harness.CSROptions{}))
		require.NoError(t, err)
		require.Equal(t, e.ca.AgentID("east", nodeA), svid.ID)
	})
}

// testCluster checks one cluster's verification method end to end.
func testCluster(t *testing.T, e *env, c *cluster) {
	other := e.other(c)
	a := e.newAgent(t, c, nodeA)
	workloadID := e.ca.WorkloadID(appNS, "web")

	t.Run("pod token gets an SVID", func(t *testing.T) {
		t.Parallel()
		_, token := workload(t, c, "web", nodeA)
		entry, csr := tokenEntry(t, token)
		e.requireSVID(t, a.sign(t, entry), csr, workloadID)
	})

	t.Run("attested pod on the agent's node gets an SVID", func(t *testing.T) {
		t.Parallel()
		pod, _ := workload(t, c, "web", nodeA)
		entry, csr := attestedEntry(t, pod)
		e.requireSVID(t, a.sign(t, entry), csr, workloadID)
	})

	t.Run("refused tokens", func(t *testing.T) {
		t.Parallel()
		_, agentToken := agentPod(t, c, nodeA)
		_, wlToken := workload(t, c, "web", nodeA)
		agentPodA, _ := agentPod(t, c, nodeA)
		wrongAudAgent := c.k.TokenRequest(t, agentNS, agentSA, []string{"istio-ca"}, agentPodA, tokenTTL)
		_, wrongAudWorkload := workload(t, c, "web", nodeA, "istio-ca", "https://kubernetes.default.svc")
		_, otherAgent := agentPod(t, other, nodeA)
		_, otherWorkload := workload(t, other, "web", nodeA)
		// TokenRequest issues nothing shorter than 10 minutes, so an expired
		// token is a real token whose times are moved an hour back and
		// signed again with the API server's own key: the API server (for
		// TokenReview) and its key set (for JWKS) accept the signature,
		// only exp is past.
		expire := func(claims map[string]any) {
			now := time.Now()
			claims["iat"], claims["nbf"], claims["exp"] = unix(now.Add(-70*time.Minute)), unix(now.Add(-70*time.Minute)), unix(now.Add(-10*time.Minute))
		}
		// Another cluster's issuer, without another API server: the real
		// claims, the issuer's kid, a key the issuer never published.
		foreign, err := rsa.GenerateKey(rand.Reader, 2048)
		require.NoError(t, err)

		// A crafted token without defect must be accepted, or the refusals
		// below could come from a faulty forgery.
		t.Run("control: re-signed token without edit is accepted", func(t *testing.T) {
			entry, csr := tokenEntry(t, c.k.Resign(t, wlToken, nil))
			e.requireSVID(t, a.sign(t, entry), csr, workloadID)
		})

		for _, tt := range []struct {
			name                 string
			agentToken, workload string
		}{
			{"wrong audience", wrongAudAgent, wrongAudWorkload},
			{"expired", c.k.Resign(t, agentToken, expire), c.k.Resign(t, wlToken, expire)},
			{"token of the other cluster's issuer", otherAgent, otherWorkload},
			{"issuer's kid, another key", kube.ResignWith(t, foreign, agentToken, nil), kube.ResignWith(t, foreign, wlToken, nil)},
			{"garbage", "garbage", "garbage"},
		} {
			t.Run(tt.name, func(t *testing.T) {
				_, err := e.ca.AttestAgent(t, c.name, tt.agentToken, harness.NewCSR(t, harness.CSROptions{}))
				requireStatus(t, codes.Unauthenticated, err)
				entry, _ := tokenEntry(t, tt.workload)
				requireCode(t, codes.Unauthenticated, a.sign(t, entry))
			})
		}
	})

	t.Run("agent token must be bound to a pod on a node", func(t *testing.T) {
		t.Parallel()
		unbound := c.k.TokenRequest(t, agentNS, agentSA, []string{audience}, nil, tokenTTL)
		_, err := e.ca.AttestAgent(t, c.name, unbound, harness.NewCSR(t, harness.CSROptions{}))
		requireStatus(t, codes.PermissionDenied, err)

		// A pod that no node runs: the token has no node claim. With the
		// bound-pod check the pod does not count as present at all.
		unscheduled := c.k.Pod(t, agentNS, "lanyard-agent-"+suffix(), agentSA, "")
		token := c.k.TokenRequest(t, agentNS, agentSA, []string{audience}, unscheduled, tokenTTL)
		_, err = e.ca.AttestAgent(t, c.name, token, harness.NewCSR(t, harness.CSROptions{}))
		want := codes.PermissionDenied
		if c.method == methodJWKS { // checkBoundPod
			want = codes.Unauthenticated
		}
		requireStatus(t, want, err)

		// A pod on a node, but not the agent's service account.
		_, webToken := workload(t, c, "web", nodeA)
		_, err = e.ca.AttestAgent(t, c.name, webToken, harness.NewCSR(t, harness.CSROptions{}))
		requireStatus(t, codes.PermissionDenied, err)
	})

	t.Run("agent of node-b gets nothing for node-a", func(t *testing.T) {
		t.Parallel()
		b := e.newAgent(t, c, nodeB)
		onA, tokenOnA := workload(t, c, "web", nodeA)
		onB, tokenOnB := workload(t, c, "web", nodeB)

		// Its own node's pods: yes.
		entry, csr := tokenEntry(t, tokenOnB)
		e.requireSVID(t, b.sign(t, entry), csr, workloadID)
		entry, csr = attestedEntry(t, onB)
		e.requireSVID(t, b.sign(t, entry), csr, workloadID)

		// A token bound to a pod on node-a, relayed by the node-b agent.
		entry, _ = tokenEntry(t, tokenOnA)
		requireCode(t, codes.PermissionDenied, b.sign(t, entry))
		// A pod on node-a, claimed as attested by the node-b agent.
		entry, _ = attestedEntry(t, onA)
		requireCode(t, codes.PermissionDenied, b.sign(t, entry))
		// Its own node's pod, claimed under another service account.
		entry, _ = attestedEntry(t, onB)
		entry.GetAttested().ServiceAccount = "admin"
		requireCode(t, codes.PermissionDenied, b.sign(t, entry))
		// The node-a agent may have both node-a pods.
		entry, csr = attestedEntry(t, onA)
		e.requireSVID(t, a.sign(t, entry), csr, workloadID)
	})

	t.Run("token of a deleted pod", func(t *testing.T) {
		t.Parallel()
		// A workload's token (BatchSignSVIDs) and an agent's (AttestAgent),
		// both accepted once, then both pods deleted.
		pod, token := workload(t, c, "web", nodeA)
		agentPodGone, agentToken := agentPod(t, c, nodeA)
		entry, csr := tokenEntry(t, token)
		e.requireSVID(t, a.sign(t, entry), csr, workloadID)
		_, err := e.ca.AttestAgent(t, c.name, agentToken, harness.NewCSR(t, harness.CSROptions{}))
		require.NoError(t, err)
		first := time.Now()
		c.k.DeletePod(t, pod.Namespace, pod.Name)
		c.k.DeletePod(t, agentPodGone.Namespace, agentPodGone.Name)
		deleted := time.Now()

		// How long the CA may still accept them, as documented: with
		// kubernetes.checkBoundPod, the pod informer's latency; with
		// TokenReview, tokenReview.cacheTTL plus the API server's own cache
		// of successful authentications.
		limit := boundPodSlack
		if c.method == methodTokenReview {
			limit = apiserverTokenCache + reviewTTL + 3*time.Second
			// Right after the deletion the cached answer still holds: the
			// documented window is real, not an accident of timing.
			entry, _ = tokenEntry(t, token)
			res := a.sign(t, entry)
			if time.Since(first) < reviewTTL {
				require.Equal(t, codes.OK, codes.Code(res.GetCode()), "cached TokenReview answer (message %q)", res.GetMessage())
			}
		}
		workloadRefused, agentRefused := false, false
		var accepted int // requests accepted after the deletion
		for !workloadRefused || !agentRefused {
			if !workloadRefused {
				entry, _ := tokenEntry(t, token)
				res := a.sign(t, entry)
				if workloadRefused = codes.Code(res.GetCode()) != codes.OK; workloadRefused {
					requireCode(t, codes.Unauthenticated, res)
					t.Logf("%s: workload token refused %s after the deletion", c.method, time.Since(deleted).Round(10*time.Millisecond))
				} else {
					accepted++
				}
			}
			if !agentRefused {
				_, err := e.ca.AttestAgent(t, c.name, agentToken, harness.NewCSR(t, harness.CSROptions{}))
				if agentRefused = err != nil; agentRefused {
					requireStatus(t, codes.Unauthenticated, err)
					t.Logf("%s: agent token refused %s after the deletion", c.method, time.Since(deleted).Round(10*time.Millisecond))
				} else {
					accepted++
				}
			}
			require.Less(t, time.Since(deleted), limit, "token of a deleted pod still accepted")
			time.Sleep(100 * time.Millisecond)
		}
		t.Logf("%s: %d requests accepted after the deletion", c.method, accepted)
	})
}
