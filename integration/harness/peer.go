//go:build unix

package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// EnvPeerSocket, in the environment of a test binary whose TestMain calls
// Main, makes it call the agent socket it names (see CallAs) and print
// the outcome as JSON instead of running tests.
const EnvPeerSocket = "LANYARD_HARNESS_PEER_SOCKET"

// CallResult is how one call ended: the gRPC code's name ("OK" when it
// succeeded) and the status message.
type CallResult struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	// SPIFFEID is the identity served, when the call succeeded.
	SPIFFEID string `json:"spiffeID,omitempty"`
}

// PeerResult is what CallAs's client saw.
type PeerResult struct {
	// UID and GID the client ran as.
	UID int `json:"uid"`
	GID int `json:"gid"`
	// WorkloadAPI is FetchX509SVID's first Recv (with the security header).
	WorkloadAPI CallResult `json:"workloadAPI"`
	// SDS is StreamSecrets' first Recv after a request for "default".
	SDS CallResult `json:"sds"`
	// SDSFetch is FetchSecrets for "default".
	SDSFetch CallResult `json:"sdsFetch"`
}

// CallAs runs a client of the agent socket at socket as another user
// (uid, gid): a copy of the test binary in a directory that user can read,
// started with those credentials (the test must run as root), calling the
// Workload API and SDS once each. The socket and its directory must be
// reachable by that user. It fails the test if the client cannot run.
func CallAs(t testing.TB, socket string, uid, gid uint32) PeerResult {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatalf("harness: test binary: %v", err)
	}
	dir, err := os.MkdirTemp("", "lanyard-peer-")
	if err != nil {
		t.Fatalf("harness: %v", err)
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatalf("harness: %v", err)
	}
	bin := filepath.Join(dir, "peer")
	if err := copyFile(self, bin, 0o755); err != nil {
		t.Fatalf("harness: copy test binary: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*CallTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), EnvPeerSocket+"="+socket)
	cmd.SysProcAttr = sysProcAttr()
	cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uid, Gid: gid}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("harness: client as uid %d gid %d: %v\n%s", uid, gid, err, stderr.String())
	}
	var res PeerResult
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		t.Fatalf("harness: client as uid %d printed %q: %v\n%s", uid, stdout.String(), err, stderr.String())
	}
	return res
}

func copyFile(from, to string, mode os.FileMode) error {
	src, err := os.Open(from)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_CREATE|os.O_EXCL|os.O_WRONLY, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		return err
	}
	return dst.Close()
}

// runPeer is the client CallAs starts: it prints a PeerResult.
func runPeer(socket string) int {
	res := PeerResult{UID: os.Getuid(), GID: os.Getgid()}
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fmt.Fprintln(os.Stderr, "peer:", err)
		return 2
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), CallTimeout)
	defer cancel()

	wctx := metadata.AppendToOutgoingContext(ctx, "workload.spiffe.io", "true")
	var id string
	res.WorkloadAPI = result(func() error {
		s, err := workload.NewSpiffeWorkloadAPIClient(conn).FetchX509SVID(wctx, &workload.X509SVIDRequest{})
		if err != nil {
			return err
		}
		resp, err := s.Recv()
		if len(resp.GetSvids()) > 0 {
			id = resp.GetSvids()[0].GetSpiffeId()
		}
		return err
	})
	res.WorkloadAPI.SPIFFEID = id
	sds := secretv3.NewSecretDiscoveryServiceClient(conn)
	req := &discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.SecretType, ResourceNames: []string{"default"}}
	res.SDS = result(func() error {
		s, err := sds.StreamSecrets(ctx)
		if err != nil {
			return err
		}
		if err := s.Send(req); err != nil && err != io.EOF {
			return err
		}
		_, err = s.Recv()
		return err
	})
	res.SDSFetch = result(func() error {
		_, err := sds.FetchSecrets(ctx, req)
		return err
	})
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		fmt.Fprintln(os.Stderr, "peer:", err)
		return 2
	}
	return 0
}

func result(call func() error) CallResult {
	st := status.Convert(call())
	return CallResult{Code: st.Code().String(), Message: st.Message()}
}
