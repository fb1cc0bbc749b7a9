package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
	"gopkg.in/yaml.v3"
)

// render prints msg as JSON or YAML (field names as in the proto's JSON
// mapping, keys sorted, stable), or calls table for the default output.
func (g *globals) render(cmd *cobra.Command, msg proto.Message, table func(w io.Writer) error) error {
	out := cmd.OutOrStdout()
	switch g.output {
	case "json", "yaml":
		v, err := plain(msg)
		if err != nil {
			return err
		}
		if g.output == "yaml" {
			enc := yaml.NewEncoder(out)
			enc.SetIndent(2)
			defer enc.Close()
			return enc.Encode(v)
		}
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(out, "%s\n", b)
		return err
	default:
		return table(out)
	}
}

// plain is msg as generic JSON values. protojson's own output is
// deliberately unstable in its whitespace; re-encoding it is not.
func plain(msg proto.Message) (any, error) {
	b, err := protojson.MarshalOptions{EmitUnpopulated: true}.Marshal(msg)
	if err != nil {
		return nil, err
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, err
	}
	return v, nil
}

// tabulate writes rows under a header, columns aligned.
func tabulate(w io.Writer, header []string, rows [][]string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	if header != nil {
		fmt.Fprintln(tw, strings.Join(header, "\t"))
	}
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

// fields writes "key: value" lines, keys aligned.
func fields(w io.Writer, kv [][2]string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
	for _, f := range kv {
		fmt.Fprintf(tw, "%s:\t%s\n", f[0], f[1])
	}
	return tw.Flush()
}

// when formats a timestamp as RFC 3339 UTC to the second, "-" when unset.
func when(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return "-"
	}
	return ts.AsTime().UTC().Format(time.RFC3339)
}

// orDash is s, or "-" when empty.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
