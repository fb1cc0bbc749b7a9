// Package istio tests Lanyard as Istio's external CA with Istio's own CA
// client code: istio-agent's citadel client
// (istio.io/istio/security/pkg/nodeagent/caclient/providers/citadel) with
// Istio's token-file credentials, and istio-agent's secret manager on top
// of it, against a real `lanyard dev` process on 127.0.0.1 started by
// integration/harness, with tokens from `lanyard dev token --audience
// istio-ca`.
//
// TestIstioWithKubernetes runs `lanyard ca` (harness.StartCA) with the
// istio: section on against a real kube-apiserver (integration/harness/kube;
// its binaries come from `make k8s-tools`, and the test fails without
// them): istio-agent's citadel client with a TokenRequest token bound to a
// pod, and ztunnel's ImpersonatedIdentity checked against the pods on each
// node.
//
// It is its own Go module so that the main module does not depend on
// istio.io/istio. Run it with `make test` or:
//
//	cd integration/istio && go test -race -count=1 ./...
//
// The lanyard binary is built from the main module (../..) once per test
// binary, or taken from $LANYARD_BIN.
package istio
