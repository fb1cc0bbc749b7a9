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
	"github.com/lanyard-id/lanyard/agent/attest"
	"github.com/lanyard-id/lanyard/agent/workloadapi"
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

func (exampleManager) Subscribe(_ context.Context, w agent.Workload) (agent.Subscription, error) {
	ca := newCA(panicT{}, "cluster.local")
	id := newIdentity(ca.svid(panicT{}, w.ID, 1), ca.bundle())
	return newIdentities(map[spiffeid.ID]*fakeIdentity{w.ID: id}).Subscribe(context.Background(), w)
}
