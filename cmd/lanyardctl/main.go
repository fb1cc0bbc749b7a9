// Command lanyardctl operates a Lanyard CA. Today it reads the trust bundle
// from the CA API; certificates, agents, rotation and audit come with the
// admin API.
package main

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"crypto/tls"

	cav1 "github.com/lanyard-id/lanyard/proto/lanyard/ca/v1"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := rootCmd().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "lanyardctl:", err)
		os.Exit(1)
	}
}

func rootCmd() *cobra.Command {
	root := &cobra.Command{Use: "lanyardctl", Short: "Operate a Lanyard CA", SilenceUsage: true, SilenceErrors: true}
	root.AddCommand(bundleCmd())
	return root
}

func bundleCmd() *cobra.Command {
	var addr, caFile, serverName string
	cmd := &cobra.Command{
		Use:   "bundle",
		Short: "Print the CA's trust bundle (PEM) from its gRPC API",
		Long: `Print the trust bundle from the CA's GetBundle API. The CA's serving
certificate is verified against --ca-file (a bundle you already trust).`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			data, err := os.ReadFile(caFile)
			if err != nil {
				return fmt.Errorf("read --ca-file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(data) {
				return errors.New("--ca-file holds no certificate")
			}
			conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
				RootCAs: pool, ServerName: serverName, MinVersion: tls.VersionTLS12,
			})))
			if err != nil {
				return err
			}
			defer conn.Close()
			resp, err := cav1.NewCAServiceClient(conn).GetBundle(ctx, &cav1.GetBundleRequest{})
			if err != nil {
				return err
			}
			for _, der := range resp.GetBundle().GetX509Authorities() {
				if err := pem.Encode(cmd.OutOrStdout(), &pem.Block{Type: "CERTIFICATE", Bytes: der}); err != nil {
					return err
				}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&addr, "addr", "127.0.0.1:8443", "CA gRPC address")
	f.StringVar(&caFile, "ca-file", ".lanyard/bundle.pem", "PEM roots to verify the CA with")
	f.StringVar(&serverName, "server-name", "localhost", "name to verify in the CA's certificate")
	return cmd
}
