package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"strconv"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/lanyard-id/lanyard/proto/lanyard/admin/v1"
)

var auditHeader = []string{"ID", "TIME", "ACTOR", "ACTION", "SUBJECT", "OUTCOME", "DETAIL"}

func auditRow(e *adminv1.AuditEvent) []string {
	return []string{strconv.FormatInt(e.GetId(), 10), when(e.GetTime()), orDash(e.GetActor()), e.GetAction(),
		orDash(e.GetSubject()), orDash(e.GetOutcome()), orDash(e.GetDetail())}
}

func auditCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "audit", Short: "The audit log"}
	var (
		req    adminv1.ListAuditRequest
		since  string
		follow bool
	)
	list := &cobra.Command{
		Use:   "list",
		Short: "List audit events, newest first; --follow streams new ones",
		Long: `List audit events, newest first: admin actions ("admin.*", each written with
outcome "requested" before it takes effect and again with its result),
refused admin calls ("admin.refused"), and periodic issuance and rejection
summaries ("issue-summary", "reject-summary" by method and code).
With --follow, print the listed events oldest first, then every new event
as it is appended, until interrupted.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if since != "" {
				t, err := parseSince(since, time.Now())
				if err != nil {
					return err
				}
				req.Since = timestamppb.New(t)
			}
			if follow {
				return g.follow(cmd, &req)
			}
			return g.call(cmd, func(ctx context.Context, api adminv1.AdminServiceClient) error {
				resp, err := api.ListAudit(ctx, &req)
				if err != nil {
					return err
				}
				return g.render(cmd, resp, func(w io.Writer) error {
					var rows [][]string
					for _, e := range resp.GetEvents() {
						rows = append(rows, auditRow(e))
					}
					return tabulate(w, auditHeader, rows)
				})
			})
		},
	}
	f := list.Flags()
	f.StringVar(&req.Actor, "actor", "", `only this actor ("uid:0", a SPIFFE ID, "system")`)
	f.StringVar(&req.Action, "action", "", `only this action (e.g. admin.evict-agent, issue-summary)`)
	f.StringVar(&since, "since", "", "only events since this time (RFC 3339) or this long ago (e.g. 1h)")
	f.Int32Var(&req.PageSize, "limit", 100, "how many events (at most 1000)")
	f.Int64Var(&req.BeforeId, "before-id", 0, "only events older than this ID (paging)")
	f.BoolVarP(&follow, "follow", "f", false, "stream new events as they are appended")
	cmd.AddCommand(list)
	return cmd
}

// follow prints the latest events oldest first, then streams new ones, one
// line (table) or one JSON object per event, until interrupted.
func (g *globals) follow(cmd *cobra.Command, req *adminv1.ListAuditRequest) error {
	ctx := cmd.Context()
	c, err := g.dial(ctx)
	if err != nil {
		return err
	}
	defer c.close()
	lctx, cancel := context.WithTimeout(ctx, g.timeout)
	resp, err := c.api.ListAudit(lctx, req)
	cancel()
	if err != nil {
		return err
	}
	events := resp.GetEvents()
	var after int64
	out := cmd.OutOrStdout()
	print := func(e *adminv1.AuditEvent) error {
		switch g.output {
		case "table":
			return tabulate(out, nil, [][]string{auditRow(e)})
		case "json": // one object per line
			v, err := plain(e)
			if err != nil {
				return err
			}
			return json.NewEncoder(out).Encode(v)
		default:
			return g.render(cmd, e, nil)
		}
	}
	if g.output == "table" {
		if err := tabulate(out, auditHeader, nil); err != nil {
			return err
		}
	}
	for i := len(events) - 1; i >= 0; i-- {
		if err := print(events[i]); err != nil {
			return err
		}
	}
	if len(events) > 0 {
		after = events[0].GetId()
	} else {
		// Nothing matched: follow from the newest event of the log.
		last, err := c.api.ListAudit(ctx, &adminv1.ListAuditRequest{PageSize: 1})
		if err != nil {
			return err
		}
		if len(last.GetEvents()) > 0 {
			after = last.GetEvents()[0].GetId()
		}
	}
	stream, err := c.api.WatchAudit(ctx, &adminv1.WatchAuditRequest{AfterId: after, Actor: req.GetActor(), Action: req.GetAction()})
	if err != nil {
		return err
	}
	for {
		m, err := stream.Recv()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, io.EOF) || status.Code(err) == codes.Canceled {
				return nil
			}
			return err
		}
		if err := print(m.GetEvent()); err != nil {
			return err
		}
	}
}
