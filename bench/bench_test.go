package bench

import (
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestHistogramBuckets(t *testing.T) {
	prev := -1
	for _, v := range []uint64{0, 1, 255, 256, 257, 511, 512, 1000, 1 << 20, 1<<40 + 12345, 1 << 47} {
		i := bucketOf(v)
		require.GreaterOrEqual(t, i, prev, "buckets never shrink as the value grows (%d)", v)
		prev = i
		require.GreaterOrEqual(t, bucketMax(i), v, "bucket %d holds %d", i, v)
		if i > 0 {
			require.Less(t, bucketMax(i-1), v, "the previous bucket ends below %d", v)
		}
		if i < histBuckets-1 {
			require.Equal(t, i+1, bucketOf(bucketMax(i)+1), "buckets are contiguous after %d", i)
		}
		require.LessOrEqual(t, float64(bucketMax(i)-v), float64(v)/128+1, "within 1/128 of %d", v)
	}
	require.Equal(t, histBuckets-1, bucketOf(1<<62), "huge values land in the last bucket")
}

func TestHistogramPercentile(t *testing.T) {
	for _, tt := range []struct {
		name    string
		values  []time.Duration
		q       float64
		want    time.Duration
		exactly bool
	}{
		{name: "empty", q: 50, want: 0, exactly: true},
		{name: "one value", values: []time.Duration{3 * time.Millisecond}, q: 99, want: 3 * time.Millisecond},
		{name: "p50 of 1..100 ms", values: msRange(1, 100), q: 50, want: 50 * time.Millisecond},
		{name: "p99 of 1..100 ms", values: msRange(1, 100), q: 99, want: 99 * time.Millisecond},
		{name: "p100 is the max", values: msRange(1, 100), q: 100, want: 100 * time.Millisecond, exactly: true},
		{name: "p99 of 1..1000 ms", values: msRange(1, 1000), q: 99, want: 990 * time.Millisecond},
		{name: "small exact values", values: []time.Duration{1, 2, 3, 4}, q: 50, want: 2, exactly: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var h histogram
			for _, v := range tt.values {
				h.record(v)
			}
			got := h.percentile(tt.q)
			if tt.exactly {
				require.Equal(t, tt.want, got)
				return
			}
			require.GreaterOrEqual(t, got, tt.want, "never below the nearest-rank value")
			require.InDelta(t, float64(tt.want), float64(got), float64(tt.want)/100)
		})
	}
}

func TestHistogramMatchesSortedSamples(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var a, b histogram
	var all []time.Duration
	for i := range 20000 {
		v := time.Duration(rng.ExpFloat64() * float64(5*time.Millisecond))
		all = append(all, v)
		if i%2 == 0 {
			a.record(v)
		} else {
			b.record(v)
		}
	}
	a.merge(&b)
	require.EqualValues(t, len(all), a.count())
	slices.Sort(all)
	for _, q := range []float64{50, 90, 99, 99.9} {
		want := all[int(q/100*float64(len(all)))-1] // nearest rank
		got := a.percentile(q)
		require.GreaterOrEqual(t, got, want, "p%v", q)
		require.InDelta(t, float64(want), float64(got), float64(want)/100, "p%v", q)
	}
}

func msRange(from, to int) []time.Duration {
	var out []time.Duration
	for i := from; i <= to; i++ {
		out = append(out, time.Duration(i)*time.Millisecond)
	}
	return out
}

func TestParseProcStat(t *testing.T) {
	for _, tt := range []struct {
		name         string
		line         string
		utime, stime uint64
		wantErr      string
	}{
		{
			name:  "plain",
			line:  "4242 (lanyard) S 1 4242 4242 0 -1 4194560 1234 0 0 0 873 129 0 0 20 0 9 0 5012 1492140032 9876 18446744073709551615",
			utime: 873, stime: 129,
		},
		{
			name:  "command with spaces and parentheses",
			line:  "77 (a (b) c) R 1 77 77 0 -1 0 0 0 0 0 15 3 0 0 20 0 1 0 1 1 1\n",
			utime: 15, stime: 3,
		},
		{name: "no command", line: "77 lanyard R 1", wantErr: "no command name"},
		{name: "truncated", line: "77 (lanyard) R 1 77 77 0 -1 0 0 0 0 0 15", wantErr: "want at least 13"},
		{name: "not a number", line: "77 (lanyard) R 1 77 77 0 -1 0 0 0 0 0 x 3 0", wantErr: "utime"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			u, s, err := parseProcStat([]byte(tt.line))
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.utime, u)
			require.Equal(t, tt.stime, s)
		})
	}
}

func TestCPUTimeOfSelf(t *testing.T) {
	d, err := cpuTime(os.Getpid())
	require.NoError(t, err)
	require.GreaterOrEqual(t, d, time.Duration(0))
}

func TestParseMetrics(t *testing.T) {
	const text = `# HELP go_memstats_mallocs_total Total number of heap objects allocated, both live and gc-ed. Semantically a counter version for go_memstats_heap_objects gauge.
# TYPE go_memstats_mallocs_total counter
go_memstats_mallocs_total 1.234567e+06

# TYPE lanyard_ca_certificates_issued_total counter
lanyard_ca_certificates_issued_total{kind="agent"} 4
lanyard_ca_certificates_issued_total{kind="workload"} 12345
lanyard_ca_requests_rejected_total{code="ResourceExhausted",method="BatchSignSVIDs/entry"} 7
lanyard_ca_requests_rejected_total{code="Unavailable",method="BatchSignSVIDs/entry"} 3 1700000000000
lanyard_odd{msg="a } b c"} 2
process_start_time_seconds 1.7e+09
go_gc_duration_seconds{quantile="1"} NaN
`
	m, err := parseMetrics(strings.NewReader(text))
	require.NoError(t, err)
	require.Equal(t, 1234567.0, m.value("go_memstats_mallocs_total"))
	require.Equal(t, 12345.0, m.value(`lanyard_ca_certificates_issued_total{kind="workload"}`))
	require.Equal(t, 12349.0, m.sum("lanyard_ca_certificates_issued_total"))
	require.Equal(t, 10.0, m.sum("lanyard_ca_requests_rejected_total"))
	require.Equal(t, 2.0, m.value(`lanyard_odd{msg="a } b c"}`))
	require.Zero(t, m.value("absent"))
	require.Zero(t, m.sum("lanyard_ca"), "sum matches whole metric names only")

	for _, bad := range []string{"novalue\n", "x{a=\"b\"}\n", "x 1 2 3\n", "x one\n"} {
		_, err := parseMetrics(strings.NewReader(bad))
		require.Error(t, err, "%q", bad)
	}
}

func TestFormatRate(t *testing.T) {
	require.Equal(t, "1235", formatRate(1234.6))
	require.Equal(t, "100", formatRate(100))
	require.Equal(t, "99.9", formatRate(99.94))
	require.Equal(t, "0.0", formatRate(0))
}

func TestTokenPoolCountsReuse(t *testing.T) {
	p := &tokenPool{toks: []workToken{{token: "a"}, {token: "b"}}}
	var got []string
	for range 5 {
		got = append(got, p.take().token)
	}
	require.Equal(t, []string{"a", "b", "a", "b", "a"}, got)
	fresh, reused := poolStats([]*tokenPool{p})
	require.EqualValues(t, 2, fresh)
	require.EqualValues(t, 3, reused)
}
