package main

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lanyard-id/lanyard/ca/kube"
	"github.com/lanyard-id/lanyard/ca/tokens"
)

const kubeClustersYAML = `
clusters:
  - name: east
    issuer: https://east.example
    jwksFile: /dev/null
    kubernetes: {kubeconfig: KUBECONFIG, checkBoundPod: true}
  - name: west
    tokenReview: {kubeconfig: KUBECONFIG, cacheTTL: 3s}
    kubernetes: {kubeconfig: KUBECONFIG}
  - name: north
    issuer: https://north.example
    jwksFile: /dev/null
`

func TestKubernetesClusterConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ca.yaml")
	require.NoError(t, os.WriteFile(path, []byte(strings.ReplaceAll(kubeClustersYAML, "KUBECONFIG", writeKubeconfig(t))), 0o600))
	cfg, err := loadConfig(path)
	require.NoError(t, err)
	require.NoError(t, cfg.validate())
	require.True(t, cfg.Clusters[0].Kubernetes.CheckBoundPod)
	require.Equal(t, 3*time.Second, cfg.Clusters[1].TokenReview.CacheTTL)
	require.False(t, cfg.Clusters[1].Kubernetes.CheckBoundPod)

	log := slog.New(slog.DiscardHandler)
	pods, err := buildPodIndexes(cfg, log)
	require.NoError(t, err)
	require.Len(t, pods, 2)
	verifiers, stats, err := buildVerifiers(cfg, log, pods)
	require.NoError(t, err)
	require.IsType(t, &kube.BoundPodVerifier{}, verifiers["east"], "checkBoundPod wraps the verifier")
	require.IsType(t, &tokens.TokenReviewVerifier{}, verifiers["west"])
	require.IsType(t, &tokens.Cache{}, verifiers["north"])
	var methods []string
	for _, s := range stats {
		methods = append(methods, s.Cluster+"/"+s.Method)
	}
	require.ElementsMatch(t, []string{"east/jwks", "west/tokenreview", "north/jwks"}, methods)
}
