// Package deploy tests the Helm chart in deploy/helm/lanyard: it is loaded,
// linted and rendered with Helm's own Go library (no helm binary), and the
// rendered manifests are checked object by object.
package deploy
