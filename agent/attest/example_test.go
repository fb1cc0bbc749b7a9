package attest_test

import (
	"context"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/peer"

	"github.com/lanyard-id/lanyard/agent/attest"
)

// A development host: the invoking user (uid 1000) is default/default.
// In a server the peer comes from Credentials; here it is set by hand.
func ExampleIdentifier_Identify() {
	uid := uint32(1000)
	unix, err := attest.NewUnix(attest.UnixConfig{Rules: []attest.UnixRule{
		{UID: &uid, Namespace: "default", ServiceAccount: "default"},
	}})
	if err != nil {
		panic(err)
	}
	id, err := attest.NewIdentifier(attest.IdentifierConfig{
		TrustDomain: spiffeid.RequireTrustDomainFromString("cluster.local"),
		Attestors:   []attest.Attestor{unix},
	})
	if err != nil {
		panic(err)
	}
	ctx := peer.NewContext(context.Background(), &peer.Peer{
		AuthInfo: attest.AuthInfo{Peer: attest.Peer{PID: 4242, UID: 1000, GID: 1000}},
	})
	w, err := id.Identify(ctx)
	if err != nil {
		panic(err)
	}
	fmt.Println(w.ID, w.Attested.Attestor)

	ctx = peer.NewContext(context.Background(), &peer.Peer{
		AuthInfo: attest.AuthInfo{Peer: attest.Peer{PID: 4343, UID: 1001, GID: 1001}},
	})
	_, err = id.Identify(ctx)
	fmt.Println(err)
	// Output:
	// spiffe://cluster.local/ns/default/sa/default unix
	// workload could not be identified: no attestor knows pid 4343 uid 1001 gid 1001
}
