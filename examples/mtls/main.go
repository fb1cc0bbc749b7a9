// Command mtls is a demo of two workloads that get their identities from a
// Lanyard node agent through the SPIFFE Workload API and talk over mutual
// TLS, each checking the other's SPIFFE ID.
//
//	SPIFFE_ENDPOINT_SOCKET=unix://$PWD/.lanyard/agent.sock go run ./examples/mtls
//
// -mode server and -mode client run the two sides as separate processes;
// the default runs both in one process.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

func main() {
	mode := flag.String("mode", "both", "server, client or both")
	addr := flag.String("addr", "127.0.0.1:8600", "address the server listens on and the client dials")
	peer := flag.String("peer", "", "SPIFFE ID the other side must have (default: any member of our trust domain)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, *mode, *addr, *peer); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context, mode, addr, peer string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	// The socket comes from SPIFFE_ENDPOINT_SOCKET.
	source, err := workloadapi.NewX509Source(ctx)
	if err != nil {
		return fmt.Errorf("workload API: %w", err)
	}
	defer source.Close()
	svid, err := source.GetX509SVID()
	if err != nil {
		return err
	}
	fmt.Printf("got identity %s (expires %s)\n", svid.ID, svid.Certificates[0].NotAfter.Format(time.RFC3339))
	authorizer := tlsconfig.AuthorizeMemberOf(svid.ID.TrustDomain())
	if peer != "" {
		id, err := spiffeid.FromString(peer)
		if err != nil {
			return err
		}
		authorizer = tlsconfig.AuthorizeID(id)
	}
	switch mode {
	case "server":
		return serve(ctx, source, addr, authorizer, 0)
	case "client":
		return dial(ctx, source, addr, authorizer)
	case "both":
		ln, err := spiffetls.ListenWithMode(ctx, "tcp", "127.0.0.1:0", spiffetls.MTLSServerWithSource(authorizer, source))
		if err != nil {
			return err
		}
		done := make(chan error, 1)
		go func() { done <- accept(ln, 1) }()
		if err := dial(ctx, source, ln.Addr().String(), authorizer); err != nil {
			ln.Close()
			return err
		}
		return <-done
	default:
		return fmt.Errorf("mode %q: want server, client or both", mode)
	}
}

func serve(ctx context.Context, source *workloadapi.X509Source, addr string, authorizer tlsconfig.Authorizer, n int) error {
	ln, err := spiffetls.ListenWithMode(ctx, "tcp", addr, spiffetls.MTLSServerWithSource(authorizer, source))
	if err != nil {
		return err
	}
	go func() { <-ctx.Done(); ln.Close() }()
	fmt.Println("server listening on", ln.Addr())
	return accept(ln, n)
}

// accept answers n connections (0: until the listener closes).
func accept(ln net.Listener, n int) error {
	defer ln.Close()
	for i := 0; n == 0 || i < n; i++ {
		conn, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		id, _ := spiffetls.PeerIDFromConn(conn)
		line, err := bufio.NewReader(conn).ReadString('\n')
		if err != nil {
			conn.Close()
			return err
		}
		fmt.Printf("server: %s said %q\n", id, line[:len(line)-1])
		fmt.Fprintf(conn, "hello %s, I am the server\n", id)
		conn.Close()
	}
	return nil
}

func dial(ctx context.Context, source *workloadapi.X509Source, addr string, authorizer tlsconfig.Authorizer) error {
	conn, err := spiffetls.DialWithMode(ctx, "tcp", addr, spiffetls.MTLSClientWithSource(authorizer, source))
	if err != nil {
		return fmt.Errorf("mTLS dial: %w", err)
	}
	defer conn.Close()
	id, _ := spiffetls.PeerIDFromConn(conn)
	fmt.Fprintln(conn, "ping over mTLS")
	reply, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err
	}
	fmt.Printf("client: %s answered %q\n", id, reply[:len(reply)-1])
	return nil
}
