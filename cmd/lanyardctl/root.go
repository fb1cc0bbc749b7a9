package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	adminv1 "github.com/lanyard-id/lanyard/proto/lanyard/admin/v1"
)

// DefaultSocket is the admin socket of `lanyard ca` with the default data
// directory; `lanyard dev` uses DIR/admin.sock.
const DefaultSocket = "/var/lib/lanyard/admin.sock"

// globals are the persistent flags.
type globals struct {
	socket, addr, bundle, cert, key, workloadAPI, serverID string
	output                                                 string
	timeout                                                time.Duration
}

func newRoot() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:   "lanyardctl",
		Short: "Operate a Lanyard CA through its admin API",
		Long: `lanyardctl operates a Lanyard CA through its admin API.

Connect either on the CA host through the admin Unix socket (--socket, the
default; your uid must be allowed), or over the network to the CA's gRPC/TLS
port with an admin X.509-SVID (--addr with --bundle and --cert/--key, or
--workload-api to take the SVID from a SPIFFE Workload API socket).

Exit codes: 0 ok, 1 error, 2 usage, 3 not found, 4 refused (not
authenticated or not an admin), 5 CA unavailable, 6 invalid request.`,
		SilenceUsage: true, SilenceErrors: true,
	}
	pf := root.PersistentFlags()
	socket := os.Getenv("LANYARD_ADMIN_SOCKET")
	if socket == "" {
		socket = DefaultSocket
	}
	pf.StringVar(&g.socket, "socket", socket, "admin Unix socket on the CA host ($LANYARD_ADMIN_SOCKET)")
	pf.StringVar(&g.addr, "addr", "", "CA gRPC/TLS address HOST:PORT (instead of --socket)")
	pf.StringVar(&g.bundle, "bundle", "", "PEM trust bundle to verify the CA with (with --addr)")
	pf.StringVar(&g.cert, "cert", "", "admin SVID certificate chain, PEM (with --addr)")
	pf.StringVar(&g.key, "key", "", "admin SVID private key, PEM (with --addr)")
	pf.StringVar(&g.workloadAPI, "workload-api", "", "take the admin SVID and bundle from this Workload API socket, e.g. unix:///run/lanyard/agent.sock (with --addr)")
	pf.StringVar(&g.serverID, "server-id", "", "SPIFFE ID the CA must present (default spiffe://<trust-domain>/lanyard/ca)")
	pf.StringVarP(&g.output, "output", "o", "table", "output format: table, json or yaml")
	pf.DurationVar(&g.timeout, "timeout", 15*time.Second, "deadline of each call (not of --follow)")
	_ = root.RegisterFlagCompletionFunc("output", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return []string{"table", "json", "yaml"}, cobra.ShellCompDirectiveNoFileComp
	})
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(certsCmd(g), agentsCmd(g), identitiesCmd(g), bundleCmd(g), caCmd(g), auditCmd(g))
	return root
}

// conn is an admin API connection.
type conn struct {
	api   adminv1.AdminServiceClient
	close func()
}

// dial connects as the flags say.
func (g *globals) dial(ctx context.Context) (*conn, error) {
	switch g.output {
	case "table", "json", "yaml":
	default:
		return nil, usagef("--output %q: want table, json or yaml", g.output)
	}
	if g.addr == "" {
		c, err := grpc.NewClient("unix://"+g.socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return nil, err
		}
		return &conn{api: adminv1.NewAdminServiceClient(c), close: func() { c.Close() }}, nil
	}
	tlsCfg, closeSrc, err := g.tlsConfig(ctx)
	if err != nil {
		return nil, err
	}
	c, err := grpc.NewClient(g.addr, grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
	if err != nil {
		closeSrc()
		return nil, err
	}
	return &conn{api: adminv1.NewAdminServiceClient(c), close: func() { c.Close(); closeSrc() }}, nil
}

// tlsConfig is mTLS with the admin SVID, checking the CA's SPIFFE ID
// against the bundle.
func (g *globals) tlsConfig(ctx context.Context) (*tls.Config, func(), error) {
	if g.workloadAPI != "" {
		if g.cert != "" || g.key != "" {
			return nil, nil, usagef("--workload-api and --cert/--key exclude each other")
		}
		src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr(g.workloadAPI)))
		if err != nil {
			return nil, nil, fmt.Errorf("admin SVID from the Workload API: %w", err)
		}
		svid, err := src.GetX509SVID()
		if err != nil {
			src.Close()
			return nil, nil, err
		}
		server, err := g.server(svid.ID.TrustDomain())
		if err != nil {
			src.Close()
			return nil, nil, err
		}
		var bundles x509bundle.Source = src
		if g.bundle != "" {
			b, err := x509bundle.Load(svid.ID.TrustDomain(), g.bundle)
			if err != nil {
				src.Close()
				return nil, nil, fmt.Errorf("--bundle: %w", err)
			}
			bundles = b
		}
		return tlsconfig.MTLSClientConfig(src, bundles, tlsconfig.AuthorizeID(server)), func() { src.Close() }, nil
	}
	if g.cert == "" || g.key == "" || g.bundle == "" {
		return nil, nil, usagef("--addr needs --bundle with --cert and --key, or --workload-api")
	}
	svid, err := x509svid.Load(g.cert, g.key)
	if err != nil {
		return nil, nil, fmt.Errorf("admin SVID: %w", err)
	}
	b, err := x509bundle.Load(svid.ID.TrustDomain(), g.bundle)
	if err != nil {
		return nil, nil, fmt.Errorf("--bundle: %w", err)
	}
	server, err := g.server(svid.ID.TrustDomain())
	if err != nil {
		return nil, nil, err
	}
	return tlsconfig.MTLSClientConfig(svid, b, tlsconfig.AuthorizeID(server)), func() {}, nil
}

func (g *globals) server(td spiffeid.TrustDomain) (spiffeid.ID, error) {
	if g.serverID != "" {
		id, err := spiffeid.FromString(g.serverID)
		if err != nil {
			return spiffeid.ID{}, usagef("--server-id: %v", err)
		}
		return id, nil
	}
	return spiffeid.FromSegments(td, "lanyard", "ca")
}

// call runs fn with a connection and the per-call deadline.
func (g *globals) call(cmd *cobra.Command, fn func(ctx context.Context, api adminv1.AdminServiceClient) error) error {
	ctx, cancel := context.WithTimeout(cmd.Context(), g.timeout)
	defer cancel()
	c, err := g.dial(ctx)
	if err != nil {
		return err
	}
	defer c.close()
	return fn(ctx, c.api)
}

// pemPool reads PEM certificates into a pool.
func pemPool(path string) (*x509.CertPool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, errors.New("no certificate in " + path)
	}
	return pool, nil
}
