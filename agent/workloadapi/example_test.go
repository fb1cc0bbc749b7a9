package workloadapi_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	spiffeworkload "github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"

	"github.com/lanyard-id/lanyard/agent"
	"github.com/lanyard-id/lanyard/agent/agenttest"
	"github.com/lanyard-id/lanyard/agent/attest"
	"github.com/lanyard-id/lanyard/agent/workloadapi"
	"github.com/lanyard-id/lanyard/ca/catest"
)

// Wiring the Workload API on the agent's socket. identities is the agent
// core (*agent.Manager); the caller (this process) is mapped by its uid.
func Example() {
	var identities workloadapi.Identities = exampleIdentities()

	uid := uint32(os.Getuid())
	unix, _ := attest.NewUnix(attest.UnixConfig{Rules: []attest.UnixRule{
		{UID: &uid, Namespace: "default", ServiceAccount: "default"},
	}})
	id, _ := attest.NewIdentifier(attest.IdentifierConfig{
		TrustDomain: spiffeid.RequireTrustDomainFromString("cluster.local"),
		Attestors:   []attest.Attestor{unix},
	})
	ws, _ := workloadapi.New(workloadapi.Config{Identifier: id, Identities: identities})

	dir, _ := os.MkdirTemp("", "lanyard-example")
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "agent.sock")
	lis, _ := net.Listen("unix", sock)
	srv := grpc.NewServer(grpc.Creds(attest.NewCredentials("")))
	ws.Register(srv)
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()

	svid, err := spiffeworkload.FetchX509SVID(context.Background(), spiffeworkload.WithAddr("unix://"+sock))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(svid.ID)
	// Output: spiffe://cluster.local/ns/default/sa/default
}

// exampleIdentities stands in for *agent.Manager: one fixed SVID.
func exampleIdentities() workloadapi.Identities {
	return exampleManager{}
}

type exampleManager struct{}

func (exampleManager) Subscribe(ctx context.Context, w agent.Workload) (agent.Subscription, error) {
	dir, err := os.MkdirTemp("", "lanyard-example-ca")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	ca, err := catest.Build(dir, catest.Options{TrustDomain: w.ID.TrustDomain()})
	if err != nil {
		return nil, err
	}
	svid, err := ca.IssueSVID(w.ID)
	if err != nil {
		return nil, err
	}
	id := agenttest.NewIdentity(svid, ca.Bundle())
	return agenttest.New(map[spiffeid.ID]*agenttest.Identity{w.ID: id}).Subscribe(ctx, w)
}
