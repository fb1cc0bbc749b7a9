package tokens

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
)

// Clusters routes a token to the verifier of the cluster it claims to come
// from (Istio's ClusterID header, for example). It is safe for concurrent
// use; its set of clusters is fixed when it is made.
type Clusters struct {
	defaultCluster string
	verifiers      map[string]Verifier
}

// NewClusters returns a router over verifiers, keyed by cluster name.
// defaultCluster, when not empty, is used for requests that name no
// cluster and must be one of the keys.
func NewClusters(defaultCluster string, verifiers map[string]Verifier) (*Clusters, error) {
	if len(verifiers) == 0 {
		return nil, errors.New("clusters: no verifier")
	}
	for name, v := range verifiers {
		if name == "" {
			return nil, errors.New("clusters: empty cluster name")
		}
		if v == nil {
			return nil, fmt.Errorf("clusters: nil verifier for cluster %q", name)
		}
	}
	if _, ok := verifiers[defaultCluster]; defaultCluster != "" && !ok {
		return nil, fmt.Errorf("clusters: default cluster %q has no verifier", defaultCluster)
	}
	return &Clusters{defaultCluster: defaultCluster, verifiers: maps.Clone(verifiers)}, nil
}

// Verify verifies the token with the verifier of cluster ("" means the
// default cluster). An unknown cluster, or "" without a default, gives an
// error wrapping ErrUnknownCluster. The result's Cluster is the name the
// verifier is registered under.
func (c *Clusters) Verify(ctx context.Context, cluster, token, audience string) (*ServiceAccount, error) {
	name := cluster
	if name == "" {
		name = c.defaultCluster
	}
	v, ok := c.verifiers[name]
	if !ok {
		if cluster == "" {
			return nil, fmt.Errorf("%w: no cluster named and no default", ErrUnknownCluster)
		}
		return nil, fmt.Errorf("%w: %.64q", ErrUnknownCluster, cluster)
	}
	sa, err := v.Verify(ctx, token, audience)
	if err != nil {
		return nil, err
	}
	out := copyServiceAccount(sa)
	out.Cluster = name
	return out, nil
}

// Names returns the configured cluster names, sorted.
func (c *Clusters) Names() []string {
	return slices.Sorted(maps.Keys(c.verifiers))
}

// Default returns the default cluster name ("" when there is none).
func (c *Clusters) Default() string {
	return c.defaultCluster
}
