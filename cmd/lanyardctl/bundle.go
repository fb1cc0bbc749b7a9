package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	adminv1 "github.com/lanyard-id/lanyard/proto/lanyard/admin/v1"
	cav1 "github.com/lanyard-id/lanyard/proto/lanyard/ca/v1"
)

func bundleCmd(g *globals) *cobra.Command {
	var caFile, serverName string
	cmd := &cobra.Command{
		Use:   "bundle",
		Short: "The trust bundle: show, export",
		Long: `Without a subcommand, print the trust bundle (PEM) from the CA's public
GetBundle API (no admin credentials needed): --addr (default 127.0.0.1:8443)
is verified against --ca-file, a bundle you already trust.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), g.timeout)
			defer cancel()
			pool, err := pemPool(caFile)
			if err != nil {
				return fmt.Errorf("--ca-file: %w", err)
			}
			addr := g.addr
			if addr == "" {
				addr = "127.0.0.1:8443"
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
			return writePEM(cmd.OutOrStdout(), resp.GetBundle().GetX509Authorities())
		},
	}
	cmd.Flags().StringVar(&caFile, "ca-file", ".lanyard/bundle.pem", "PEM roots to verify the CA with")
	cmd.Flags().StringVar(&serverName, "server-name", "localhost", "name to verify in the CA's certificate")

	show := &cobra.Command{
		Use:   "show",
		Short: "Show the bundle's roots and sequence",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.call(cmd, func(ctx context.Context, api adminv1.AdminServiceClient) error {
				resp, err := api.GetBundle(ctx, &adminv1.GetBundleRequest{})
				if err != nil {
					return err
				}
				return g.render(cmd, resp, func(w io.Writer) error {
					fmt.Fprintf(w, "Trust domain: %s\nSequence:     %d\n\n", resp.GetTrustDomain(), resp.GetSequence())
					var rows [][]string
					for _, der := range resp.GetX509Authorities() {
						c, err := x509.ParseCertificate(der)
						if err != nil {
							return err
						}
						rows = append(rows, []string{c.Subject.String(), hex.EncodeToString(c.SubjectKeyId),
							c.NotBefore.UTC().Format(time.RFC3339), c.NotAfter.UTC().Format(time.RFC3339)})
					}
					return tabulate(w, []string{"ROOT", "KEY ID", "NOT BEFORE", "NOT AFTER"}, rows)
				})
			})
		},
	}
	var format string
	export := &cobra.Command{
		Use:   "export",
		Short: "Export the bundle as PEM or as a SPIFFE bundle (JWKS JSON)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if format != "pem" && format != "spiffe" {
				return usagef("--format %q: want pem or spiffe", format)
			}
			return g.call(cmd, func(ctx context.Context, api adminv1.AdminServiceClient) error {
				resp, err := api.GetBundle(ctx, &adminv1.GetBundleRequest{})
				if err != nil {
					return err
				}
				if format == "pem" {
					return writePEM(cmd.OutOrStdout(), resp.GetX509Authorities())
				}
				td, err := spiffeid.TrustDomainFromString(resp.GetTrustDomain())
				if err != nil {
					return err
				}
				var roots []*x509.Certificate
				for _, der := range resp.GetX509Authorities() {
					c, err := x509.ParseCertificate(der)
					if err != nil {
						return err
					}
					roots = append(roots, c)
				}
				b := spiffebundle.FromX509Authorities(td, roots)
				b.SetSequenceNumber(uint64(resp.GetSequence()))
				b.SetRefreshHint(5 * time.Minute)
				data, err := b.Marshal()
				if err != nil {
					return err
				}
				_, err = fmt.Fprintf(cmd.OutOrStdout(), "%s\n", data)
				return err
			})
		},
	}
	export.Flags().StringVar(&format, "format", "pem", "pem, or spiffe (SPIFFE bundle JSON, for federation)")
	_ = export.RegisterFlagCompletionFunc("format", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return []string{"pem", "spiffe"}, cobra.ShellCompDirectiveNoFileComp
	})
	cmd.AddCommand(show, export)
	return cmd
}

func writePEM(w io.Writer, ders [][]byte) error {
	for _, der := range ders {
		if err := pem.Encode(w, &pem.Block{Type: "CERTIFICATE", Bytes: der}); err != nil {
			return err
		}
	}
	return nil
}
