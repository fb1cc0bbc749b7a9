// Package deploy tests deploy/: the Helm chart in deploy/helm/lanyard and
// deploy/Dockerfile, with Helm's own Go library and no helm binary.
//
// The chart is linted (helm lint --strict) and rendered (as helm template)
// with the values sets of cases_test.go; the objects, the exact RBAC rules
// and the refused value combinations are checked, and the rendered CA and
// agent configurations are kept as golden files in testdata/config, which
// cmd/lanyard parses with its real loaders (TestDeployConfigs). Every
// manifest is applied to a real kube-apiserver (integration/harness/kube)
// with server-side apply in dry-run mode, and the RBAC rules are exercised
// there by impersonating the CA's and the agent's service accounts. The
// Dockerfile is parsed with BuildKit's parser and its go build line run
// here, to check that the image's binary is static.
//
// It is a module of its own so that Helm's and BuildKit's dependencies stay
// out of the main module. Run it with make test, or:
//
//	cd integration/deploy && go test -race -count=1 ./...
package deploy
