package integration

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lanyard-id/lanyard/integration/harness"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/admin")

// ctl runs lanyardctl on the dev CA's admin socket and requires success.
func ctl(t *testing.T, d *harness.Dev, args ...string) string {
	t.Helper()
	res := harness.Ctl(t, harness.CtlOptions{}, append([]string{"--socket", d.AdminSocket()}, args...)...)
	require.Equal(t, 0, res.Code, "lanyardctl %v: %s", args, res.Stderr)
	return res.Stdout
}

// ctlJSON runs lanyardctl -o json and decodes its output.
func ctlJSON(t *testing.T, d *harness.Dev, args ...string) map[string]any {
	t.Helper()
	var v map[string]any
	out := ctl(t, d, append(args, "-o", "json")...)
	require.NoError(t, json.Unmarshal([]byte(out), &v), out)
	return v
}

// normalizer replaces what differs from run to run, and nothing else:
// times, hex values (serials, key ids, digests: each distinct value gets
// its own numbered placeholder, so equal values stay equal), audit IDs,
// the state directory and the host name.
type normalizer struct {
	hex map[string]string
	dir string
}

var (
	timeRE   = regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z`)
	derRE    = regexp.MustCompile(`"[A-Za-z0-9+/]{100,}={0,2}"`)
	spacesRE = regexp.MustCompile(`  +`)
	// Token verifier counters depend on retries; the row must be there.
	verifierRowRE  = regexp.MustCompile(`(?m)^(\S+\s+(?:jwks|tokenreview)\s+\S+)(\s+\d+){3}$`)
	verifierJSONRE = regexp.MustCompile(`"(requests|cacheHits|calls)": "\d+"`)
	hexRE          = regexp.MustCompile(`\b[0-9a-f]{16,64}\b`)
	auditIDRE      = regexp.MustCompile(`(?m)^\d+(\s{2,})`)
	jsonIDRE       = regexp.MustCompile(`"id": "\d+"`)
)

func newNormalizer(dir string) *normalizer { return &normalizer{hex: map[string]string{}, dir: dir} }

func (n *normalizer) apply(s string) string {
	s = strings.ReplaceAll(s, n.dir, "<dir>")
	// The host name is in the intermediate's subject and names the replica.
	if host, err := os.Hostname(); err == nil && host != "" {
		q := regexp.QuoteMeta(host)
		s = regexp.MustCompile(`intermediate `+q+`,`).ReplaceAllString(s, "intermediate <host>,")
		s = regexp.MustCompile(`(?m)^`+q+` `).ReplaceAllString(s, "<host> ")
		s = regexp.MustCompile(`(?m) `+q+`$`).ReplaceAllString(s, " <host>")
		s = strings.ReplaceAll(s, `"name": "`+host+`"`, `"name": "<host>"`)
		s = strings.ReplaceAll(s, `"replica": "`+host+`"`, `"replica": "<host>"`)
	}
	s = timeRE.ReplaceAllString(s, "<time>")
	s = derRE.ReplaceAllString(s, `"<der>"`)
	s = verifierJSONRE.ReplaceAllString(s, `"$1": "<n>"`)
	s = hexRE.ReplaceAllStringFunc(s, func(h string) string {
		p, ok := n.hex[h]
		if !ok {
			p = fmt.Sprintf("<hex%d>", len(n.hex)+1)
			n.hex[h] = p
		}
		return p
	})
	if !strings.HasPrefix(strings.TrimSpace(s), "{") {
		// Tables: placeholders are narrower than what they replace (and a
		// serial may be 31 hex digits), so column padding is not compared;
		// cmd/lanyardctl's own tests check the alignment.
		s = verifierRowRE.ReplaceAllString(s, "$1 <n> <n> <n>")
		s = spacesRE.ReplaceAllString(s, "  ")
	}
	return s
}

// golden compares got, normalised, with testdata/admin/<name>.golden, or
// rewrites the file with -update.
func golden(t *testing.T, n *normalizer, name, got string) {
	t.Helper()
	got = n.apply(got)
	path := filepath.Join("testdata", "admin", name+".golden")
	if *update {
		require.NoError(t, os.WriteFile(path, []byte(got), 0o644))
		return
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "missing golden file: run go test ./integration -run %s -update", t.Name())
	require.Equal(t, string(want), got, "%s differs; if the change is intended, rerun with -update", path)
}
