package main

import (
	"context"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	adminv1 "github.com/lanyard-id/lanyard/proto/lanyard/admin/v1"
)

func agentsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "agents", Short: "Node agents: list, show, evict, ban"}
	list := &cobra.Command{
		Use:   "list",
		Short: "List the node agents the CA knows",
		Long: `List the node agents the CA knows: node, cluster, last call to the CA, agent
SVID expiry, the bundle sequence and number of workload SVIDs the agent
reported on its last call, and whether it is banned or evicted.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.call(cmd, func(ctx context.Context, api adminv1.AdminServiceClient) error {
				resp, err := api.ListAgents(ctx, &adminv1.ListAgentsRequest{})
				if err != nil {
					return err
				}
				return g.render(cmd, resp, func(w io.Writer) error {
					var rows [][]string
					for _, a := range resp.GetAgents() {
						rows = append(rows, []string{a.GetSpiffeId(), a.GetNodeName(), a.GetCluster(), when(a.GetLastSeen()),
							when(a.GetSvidExpiresAt()), strconv.FormatInt(a.GetBundleSequence(), 10),
							strconv.FormatInt(a.GetWorkloads(), 10), agentStatus(a)})
					}
					return tabulate(w, []string{"SPIFFE ID", "NODE", "CLUSTER", "LAST SEEN", "SVID EXPIRES", "BUNDLE", "WORKLOADS", "STATUS"}, rows)
				})
			})
		},
	}
	show := &cobra.Command{
		Use:   "show NODE|SPIFFE-ID",
		Short: "Show one agent",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.call(cmd, func(ctx context.Context, api adminv1.AdminServiceClient) error {
				resp, err := api.GetAgent(ctx, &adminv1.GetAgentRequest{Agent: args[0]})
				if err != nil {
					return err
				}
				return g.render(cmd, resp, func(w io.Writer) error { return agentFields(w, resp.GetAgent()) })
			})
		},
	}
	evict := agentAction(g, "evict", "Make every CA replica refuse the agent's current SVID now",
		`The CA refuses the agent's current SVID at once (on the replica that answers,
and on the others within their control poll, 1 s by default). The agent may
attest again while its token is valid, unless it is banned.`,
		func(ctx context.Context, api adminv1.AdminServiceClient, ref string) (proto.Message, *adminv1.Agent, error) {
			resp, err := api.EvictAgent(ctx, &adminv1.EvictAgentRequest{Agent: ref})
			return resp, resp.GetAgent(), err
		})
	ban := agentAction(g, "ban", "Ban an agent: its SVID and any new attestation are refused", "",
		func(ctx context.Context, api adminv1.AdminServiceClient, ref string) (proto.Message, *adminv1.Agent, error) {
			resp, err := api.BanAgent(ctx, &adminv1.BanAgentRequest{Agent: ref})
			return resp, resp.GetAgent(), err
		})
	unban := agentAction(g, "unban", "Lift an agent's ban", "",
		func(ctx context.Context, api adminv1.AdminServiceClient, ref string) (proto.Message, *adminv1.Agent, error) {
			resp, err := api.UnbanAgent(ctx, &adminv1.UnbanAgentRequest{Agent: ref})
			return resp, resp.GetAgent(), err
		})
	cmd.AddCommand(list, show, evict, ban, unban)
	return cmd
}

func agentAction(g *globals, verb, short, long string,
	do func(ctx context.Context, api adminv1.AdminServiceClient, ref string) (proto.Message, *adminv1.Agent, error),
) *cobra.Command {
	return &cobra.Command{
		Use:   verb + " NODE|SPIFFE-ID",
		Short: short,
		Long:  long,
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.call(cmd, func(ctx context.Context, api adminv1.AdminServiceClient) error {
				resp, agent, err := do(ctx, api, args[0])
				if err != nil {
					return err
				}
				return g.render(cmd, resp, func(w io.Writer) error { return agentFields(w, agent) })
			})
		},
	}
}

func agentStatus(a *adminv1.Agent) string {
	var s []string
	if a.GetBanned() {
		s = append(s, "banned")
	}
	if a.GetEvictedAt() != nil {
		s = append(s, "evicted "+when(a.GetEvictedAt()))
	}
	if len(s) == 0 {
		return "ok"
	}
	return strings.Join(s, ", ")
}

func agentFields(w io.Writer, a *adminv1.Agent) error {
	return fields(w, [][2]string{
		{"SPIFFE ID", a.GetSpiffeId()}, {"Node", a.GetNodeName()}, {"Cluster", a.GetCluster()},
		{"SVID serial", a.GetSerial()}, {"SVID expires", when(a.GetSvidExpiresAt())},
		{"First seen", when(a.GetFirstSeen())}, {"Last seen", when(a.GetLastSeen())},
		{"Bundle sequence", strconv.FormatInt(a.GetBundleSequence(), 10)},
		{"Workloads", strconv.FormatInt(a.GetWorkloads(), 10)},
		{"Banned", strconv.FormatBool(a.GetBanned())}, {"Evicted", when(a.GetEvictedAt())},
	})
}
