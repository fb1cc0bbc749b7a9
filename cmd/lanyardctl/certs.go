package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/lanyard-id/lanyard/proto/lanyard/admin/v1"
)

func certsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "certs", Short: "Issued certificates"}
	cmd.AddCommand(certsListCmd(g), certsShowCmd(g), certsCountCmd(g))
	return cmd
}

func certsListCmd(g *globals) *cobra.Command {
	var (
		req      adminv1.ListCertificatesRequest
		expiring time.Duration
		since    string
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List issued certificates, newest first",
		Long: `List issued certificates, newest first, one page at a time (--limit, default
100). When there are more, the next page's cursor is printed on stderr (and is
nextPageToken in JSON/YAML); pass it with --page-token.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if expiring < 0 {
				return usagef("--expiring-within must be positive")
			}
			if expiring > 0 {
				req.ExpiringWithin = durationpb.New(expiring)
			}
			if since != "" {
				t, err := parseSince(since, time.Now())
				if err != nil {
					return err
				}
				req.IssuedSince = timestamppb.New(t)
			}
			return g.call(cmd, func(ctx context.Context, api adminv1.AdminServiceClient) error {
				resp, err := api.ListCertificates(ctx, &req)
				if err != nil {
					return err
				}
				return g.render(cmd, resp, func(w io.Writer) error {
					rows := make([][]string, 0, len(resp.GetCertificates()))
					for _, c := range resp.GetCertificates() {
						rows = append(rows, []string{c.GetSerial(), c.GetSpiffeId(), c.GetKind(), orDash(c.GetNodeName()),
							when(c.GetIssuedAt()), when(c.GetNotAfter()), when(c.GetRevokedAt())})
					}
					if err := tabulate(w, []string{"SERIAL", "SPIFFE ID", "KIND", "NODE", "ISSUED", "EXPIRES", "REVOKED"}, rows); err != nil {
						return err
					}
					if t := resp.GetNextPageToken(); t != "" {
						fmt.Fprintf(cmd.ErrOrStderr(), "more: --page-token %s\n", t)
					}
					return nil
				})
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.SpiffeId, "spiffe-id", "", "only this SPIFFE ID")
	f.StringVar(&req.Namespace, "namespace", "", "only this namespace")
	f.StringVar(&req.ServiceAccount, "service-account", "", "only this service account")
	f.StringVar(&req.NodeName, "node", "", "only certificates of workloads on this node")
	f.StringVar(&req.Agent, "agent", "", "only certificates this agent asked for (SPIFFE ID or node name)")
	f.StringVar(&req.Kind, "kind", "", "only this kind: workload, agent, istio, ca-serving")
	f.DurationVar(&expiring, "expiring-within", 0, "only valid certificates expiring within this duration")
	f.StringVar(&since, "issued-since", "", "only certificates issued since this time (RFC 3339) or this long ago (e.g. 1h)")
	f.BoolVar(&req.Revoked, "revoked", false, "only revoked certificates")
	f.Int32Var(&req.PageSize, "limit", 100, "page size (at most 1000)")
	f.StringVar(&req.PageToken, "page-token", "", "cursor of the page to list, from the previous page")
	return cmd
}

// parseSince reads an RFC 3339 time or a duration before now.
func parseSince(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, usagef("%q is neither an RFC 3339 time nor a duration", s)
	}
	return t, nil
}

func certsShowCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "show SERIAL",
		Short: "Show one certificate's record (and PEM when the store keeps it)",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.call(cmd, func(ctx context.Context, api adminv1.AdminServiceClient) error {
				resp, err := api.GetCertificate(ctx, &adminv1.GetCertificateRequest{Serial: args[0]})
				if err != nil {
					return err
				}
				return g.render(cmd, resp, func(w io.Writer) error {
					c := resp.GetCertificate()
					if err := fields(w, [][2]string{
						{"Serial", c.GetSerial()}, {"SPIFFE ID", c.GetSpiffeId()}, {"Kind", c.GetKind()},
						{"Cluster", orDash(c.GetCluster())}, {"Namespace", orDash(c.GetNamespace())},
						{"Service account", orDash(c.GetServiceAccount())}, {"Pod", orDash(c.GetPodName())},
						{"Pod UID", orDash(c.GetPodUid())}, {"Node", orDash(c.GetNodeName())}, {"Caller", orDash(c.GetCaller())},
						{"Not before", when(c.GetNotBefore())}, {"Not after", when(c.GetNotAfter())},
						{"Issued", when(c.GetIssuedAt())}, {"Revoked", when(c.GetRevokedAt())},
						{"SHA-256", c.GetSha256()}, {"Issuer key ID", c.GetIssuerKeyId()},
					}); err != nil {
						return err
					}
					if c.GetPem() == "" {
						_, err := fmt.Fprintln(w, "PEM:             not kept by the store (its SHA-256 is)")
						return err
					}
					_, err := fmt.Fprint(w, c.GetPem())
					return err
				})
			})
		},
	}
}

func certsCountCmd(g *globals) *cobra.Command {
	var (
		by    string
		req   adminv1.CountCertificatesRequest
		valid bool
	)
	cmd := &cobra.Command{
		Use:   "count",
		Short: "Count certificates by identity or node",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch by {
			case "identity":
				req.Group = adminv1.CountGroup_COUNT_GROUP_IDENTITY
			case "node":
				req.Group = adminv1.CountGroup_COUNT_GROUP_NODE
			default:
				return usagef("--by %q: want identity or node", by)
			}
			req.ValidOnly = valid
			return g.call(cmd, func(ctx context.Context, api adminv1.AdminServiceClient) error {
				resp, err := api.CountCertificates(ctx, &req)
				if err != nil {
					return err
				}
				return g.render(cmd, resp, func(w io.Writer) error {
					head := "SPIFFE ID"
					if by == "node" {
						head = "NODE"
					}
					var rows [][]string
					for _, gr := range resp.GetGroups() {
						rows = append(rows, []string{orDash(gr.GetKey()), strconv.FormatInt(gr.GetCount(), 10)})
					}
					rows = append(rows, []string{"TOTAL", strconv.FormatInt(resp.GetTotal(), 10)})
					return tabulate(w, []string{head, "COUNT"}, rows)
				})
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&by, "by", "identity", "group by identity or node")
	f.BoolVar(&valid, "valid", false, "only certificates valid now")
	f.StringVar(&req.Namespace, "namespace", "", "only this namespace")
	_ = cmd.RegisterFlagCompletionFunc("by", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return []string{"identity", "node"}, cobra.ShellCompDirectiveNoFileComp
	})
	return cmd
}

// exactArgs is cobra.ExactArgs as a usage error.
func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := cobra.ExactArgs(n)(cmd, args); err != nil {
			return usageError{err}
		}
		return nil
	}
}

// noArgs refuses positional arguments as a usage error.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usagef("%s takes no arguments, got %q", cmd.CommandPath(), args)
	}
	return nil
}
