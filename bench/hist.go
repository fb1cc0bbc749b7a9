package bench

import (
	"math/bits"
	"time"
)

// histogram is a log-linear latency histogram in the manner of
// HdrHistogram: values below 2^subBits are exact, larger ones keep their
// top subBits bits, so every recorded value is within 1/2^(subBits-1)
// (under 1 %) of its bucket's bounds. Memory is fixed whatever the number of
// samples. It is not safe for concurrent use: each caller owns one and they
// are merged at the end.
type histogram struct {
	counts [histBuckets]uint64
	n      uint64
	max    uint64
}

const (
	subBits     = 8
	subCount    = 1 << subBits // 256
	halfCount   = subCount / 2
	maxExponent = 40 // values up to ~2^48 ns (~78 h), far beyond any RPC
	histBuckets = subCount + maxExponent*halfCount
)

// bucketOf returns the bucket index of v.
func bucketOf(v uint64) int {
	if v < subCount {
		return int(v)
	}
	e := bits.Len64(v) - subBits // ≥ 1: v>>e has exactly subBits bits
	if e > maxExponent {
		return histBuckets - 1
	}
	return subCount + (e-1)*halfCount + int(v>>e) - halfCount
}

// bucketMax returns the largest value that falls into bucket i.
func bucketMax(i int) uint64 {
	if i < subCount {
		return uint64(i)
	}
	e := (i-subCount)/halfCount + 1
	top := uint64((i-subCount)%halfCount + halfCount)
	return (top+1)<<e - 1
}

func (h *histogram) record(d time.Duration) {
	v := uint64(max(d, 0))
	h.counts[bucketOf(v)]++
	h.n++
	h.max = max(h.max, v)
}

func (h *histogram) merge(o *histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.max = max(h.max, o.max)
}

// count is the number of recorded values.
func (h *histogram) count() uint64 { return h.n }

// percentile returns the nearest-rank q-th percentile (0 < q ≤ 100): the
// smallest recorded value such that at least q % of the values are at or
// below it, rounded up to its bucket's upper bound (never above the largest
// value recorded). An empty histogram answers 0.
func (h *histogram) percentile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(q / 100 * float64(h.n))
	if float64(rank) < q/100*float64(h.n) {
		rank++ // ceil
	}
	rank = min(max(rank, 1), h.n)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return time.Duration(min(bucketMax(i), h.max))
		}
	}
	return time.Duration(h.max)
}
