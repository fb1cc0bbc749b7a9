package main

import (
	"context"
	"fmt"
	"io"
	"strconv"

	"github.com/spf13/cobra"

	adminv1 "github.com/lanyard-id/lanyard/proto/lanyard/admin/v1"
)

func caCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "ca", Short: "The CA itself"}
	cmd.AddCommand(&cobra.Command{
		Use:   "status",
		Short: "Roots, intermediates, replicas, store and token verifiers",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.call(cmd, func(ctx context.Context, api adminv1.AdminServiceClient) error {
				resp, err := api.GetStatus(ctx, &adminv1.GetStatusRequest{})
				if err != nil {
					return err
				}
				return g.render(cmd, resp, func(w io.Writer) error { return statusTable(w, resp) })
			})
		},
	})
	return cmd
}

func statusTable(w io.Writer, s *adminv1.GetStatusResponse) error {
	if err := fields(w, [][2]string{
		{"Trust domain", s.GetTrustDomain()}, {"Bundle sequence", strconv.FormatInt(s.GetBundleSequence(), 10)},
		{"Store", s.GetStoreType()}, {"Control sequence", strconv.FormatInt(s.GetControlSequence(), 10)},
	}); err != nil {
		return err
	}
	certs := func(title string, cs []*adminv1.CACertificate) error {
		fmt.Fprintf(w, "\n%s:\n", title)
		var rows [][]string
		for _, c := range cs {
			active := ""
			if c.GetActive() {
				active = "active"
			}
			rows = append(rows, []string{orDash(c.GetSubject()), c.GetSubjectKeyId(), when(c.GetNotAfter()), orDash(active), orDash(c.GetReplica())})
		}
		return tabulate(w, []string{"SUBJECT", "KEY ID", "NOT AFTER", "ACTIVE", "REPLICA"}, rows)
	}
	if err := certs("Roots", s.GetRoots()); err != nil {
		return err
	}
	if err := certs("Intermediates", s.GetIntermediates()); err != nil {
		return err
	}
	fmt.Fprintln(w, "\nReplicas:")
	var rows [][]string
	for _, r := range s.GetReplicas() {
		rows = append(rows, []string{r.GetName(), r.GetHealth(), when(r.GetStartedAt()), when(r.GetLastSeen())})
	}
	if err := tabulate(w, []string{"NAME", "HEALTH", "STARTED", "LAST SEEN"}, rows); err != nil {
		return err
	}
	fmt.Fprintln(w, "\nToken verifiers:")
	rows = nil
	for _, v := range s.GetTokenVerifiers() {
		rows = append(rows, []string{v.GetCluster(), v.GetMethod(), when(v.GetLastKeyFetch()),
			strconv.FormatUint(v.GetRequests(), 10), strconv.FormatUint(v.GetCacheHits(), 10), strconv.FormatUint(v.GetCalls(), 10)})
	}
	return tabulate(w, []string{"CLUSTER", "METHOD", "LAST KEY FETCH", "REQUESTS", "CACHE HITS", "CALLS"}, rows)
}
