package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	adminv1 "github.com/lanyard-id/lanyard/proto/lanyard/admin/v1"
)

func identitiesCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "identities",
		Short: "The deny list of SPIFFE IDs",
		Long: `A SPIFFE ID on the deny list gets no new certificate, through the agent API
or Istio's, from the next request on (on the other CA replicas within their
control poll, 1 s by default). Certificates already issued stay valid until
they expire.`,
	}
	var reason string
	deny := &cobra.Command{
		Use:   "deny SPIFFE-ID",
		Short: "Put a SPIFFE ID on the deny list",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.call(cmd, func(ctx context.Context, api adminv1.AdminServiceClient) error {
				resp, err := api.DenyIdentity(ctx, &adminv1.DenyIdentityRequest{SpiffeId: args[0], Reason: reason})
				if err != nil {
					return err
				}
				return g.render(cmd, resp, func(w io.Writer) error {
					_, err := fmt.Fprintf(w, "denied %s\n", resp.GetIdentity().GetSpiffeId())
					return err
				})
			})
		},
	}
	deny.Flags().StringVar(&reason, "reason", "", "why (kept in the deny list and the audit log)")
	allow := &cobra.Command{
		Use:   "allow SPIFFE-ID",
		Short: "Take a SPIFFE ID off the deny list",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.call(cmd, func(ctx context.Context, api adminv1.AdminServiceClient) error {
				resp, err := api.AllowIdentity(ctx, &adminv1.AllowIdentityRequest{SpiffeId: args[0]})
				if err != nil {
					return err
				}
				return g.render(cmd, resp, func(w io.Writer) error {
					_, err := fmt.Fprintf(w, "allowed %s\n", args[0])
					return err
				})
			})
		},
	}
	list := &cobra.Command{
		Use:   "list",
		Short: "List the deny list",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.call(cmd, func(ctx context.Context, api adminv1.AdminServiceClient) error {
				resp, err := api.ListDeniedIdentities(ctx, &adminv1.ListDeniedIdentitiesRequest{})
				if err != nil {
					return err
				}
				return g.render(cmd, resp, func(w io.Writer) error {
					var rows [][]string
					for _, d := range resp.GetIdentities() {
						rows = append(rows, []string{d.GetSpiffeId(), when(d.GetCreatedAt()), orDash(d.GetActor()), orDash(d.GetReason())})
					}
					return tabulate(w, []string{"SPIFFE ID", "DENIED", "BY", "REASON"}, rows)
				})
			})
		},
	}
	cmd.AddCommand(deny, allow, list)
	return cmd
}
