package integration

import (
	"context"
	"crypto/x509"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/lanyard-id/lanyard/integration/harness"
	cav1 "github.com/lanyard-id/lanyard/proto/lanyard/ca/v1"
)

// load keeps sending batches from some agents and collects the serial of
// every certificate the CA returned, until it is stopped or the CA fails a
// call or an entry.
type load struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu         sync.Mutex
	serials    []string
	ended      []error // why each worker stopped
	entryCodes map[codes.Code]int
}

// startLoad runs workers goroutines per agent, each sending batches of
// size entries (the same CSR: the CA signs a new certificate every time)
// with tok, at most batches times (0: until stopped).
func startLoad(t *testing.T, agents []*harness.Agent, tok string, workers, size, batches int) *load {
	t.Helper()
	csr := harness.NewCSR(t, harness.CSROptions{}).DER
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{cancel: cancel, entryCodes: map[codes.Code]int{}}
	t.Cleanup(l.stop)
	for _, a := range agents {
		for w := range workers {
			l.wg.Add(1)
			go func() {
				defer l.wg.Done()
				l.end(l.work(ctx, a, fmt.Sprintf("%s-%d", a.Node, w), tok, csr, size, batches))
			}()
		}
	}
	return l
}

func (l *load) work(ctx context.Context, a *harness.Agent, name, tok string, csr []byte, size, batches int) error {
	req := &cav1.BatchSignSVIDsRequest{}
	for i := range size {
		req.Requests = append(req.Requests, entry(fmt.Sprintf("%s-%d", name, i), tok, csr, 0))
	}
	for n := 0; batches == 0 || n < batches; n++ {
		if ctx.Err() != nil {
			return nil
		}
		callCtx, cancel := context.WithTimeout(ctx, harness.CallTimeout)
		resp, err := a.Client.BatchSignSVIDs(callCtx, req)
		cancel()
		if err != nil {
			return err
		}
		if len(resp.GetResults()) != size {
			return fmt.Errorf("%d results for %d entries", len(resp.GetResults()), size)
		}
		var serials []string
		var entryErr error
		l.mu.Lock()
		for _, res := range resp.GetResults() {
			l.entryCodes[codes.Code(res.GetCode())]++
		}
		l.mu.Unlock()
		for _, res := range resp.GetResults() {
			if res.GetCode() != 0 {
				entryErr = status.Error(codes.Code(res.GetCode()), res.GetMessage())
				continue
			}
			if len(res.GetSvid().GetCertChain()) == 0 {
				return fmt.Errorf("entry %s: code 0 without SVID", res.GetId())
			}
			leaf, err := x509.ParseCertificate(res.GetSvid().GetCertChain()[0])
			if err != nil {
				return fmt.Errorf("entry %s: %w", res.GetId(), err)
			}
			serials = append(serials, leaf.SerialNumber.Text(16))
		}
		l.mu.Lock()
		l.serials = append(l.serials, serials...)
		l.mu.Unlock()
		if entryErr != nil {
			return entryErr
		}
	}
	return nil
}

func (l *load) end(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ended = append(l.ended, err)
}

// stop ends the load and waits for its workers.
func (l *load) stop() {
	l.cancel()
	l.wg.Wait()
}

// wait waits for every worker to end on its own.
func (l *load) wait() { l.wg.Wait() }

func (l *load) issued() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.serials...)
}

// refused returns how many entries were answered with each code but OK.
func (l *load) refused() map[codes.Code]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[codes.Code]int{}
	for c, n := range l.entryCodes {
		if c != codes.OK {
			out[c] = n
		}
	}
	return out
}

func (l *load) errors() []error {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []error
	for _, err := range l.ended {
		if err != nil {
			out = append(out, err)
		}
	}
	return out
}

// waitIssued waits until the load has received at least n certificates.
func (l *load) waitIssued(t *testing.T, n int) {
	t.Helper()
	require.Eventually(t, func() bool { return len(l.issued()) >= n }, 20*time.Second, 10*time.Millisecond,
		"load did not get %d certificates (errors: %v)", n, l.errors())
}

// TestConcurrentIssuance: agents sending many batches at once all get
// their certificates, each with its own serial and its own record.
func TestConcurrentIssuance(t *testing.T) {
	t.Parallel()
	d, a := startDev(t)
	agents := []*harness.Agent{a, d.NewAgent(t, "node-b"), d.NewAgent(t, "node-c"), d.NewAgent(t, "node-d")}
	tok := d.Token(t, "default", "default") // not bound to a node: any agent may present it
	before := issued(t, d)

	const workers, size, batches = 2, 32, 4
	l := startLoad(t, agents, tok, workers, size, batches)
	l.wait()
	require.Empty(t, l.errors())
	serials := l.issued()
	want := len(agents) * workers * size * batches
	require.Len(t, serials, want)
	seen := map[string]bool{}
	for _, s := range serials {
		require.False(t, seen[s], "serial %s issued twice", s)
		seen[s] = true
	}
	require.Empty(t, d.MissingCertificates(t, serials), "returned certificates without a record")
	require.Equal(t, before.plus(want), issued(t, d))
	requireHealthy(t, d)
}
