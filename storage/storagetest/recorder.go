package storagetest

import (
	"context"
	"sync"

	"github.com/lanyard-id/lanyard/storage"
)

// Recorder is the one in-memory stand-in for the CA's certificate
// recorder (storage.Writer) in tests: it keeps every record it is given,
// with the context it came with, and fails while told to. Safe for
// concurrent use; the zero value is ready.
type Recorder struct {
	mu      sync.Mutex
	records []storage.CertificateRecord
	ctxs    []context.Context
	err     error
}

// Record keeps rec, or returns the error set with Fail.
func (r *Recorder) Record(ctx context.Context, rec storage.CertificateRecord) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return r.err
	}
	r.records = append(r.records, rec)
	r.ctxs = append(r.ctxs, ctx)
	return nil
}

// Fail makes every later Record return err (nil: succeed again).
func (r *Recorder) Fail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.err = err
}

// Records returns a copy of what was recorded, in order.
func (r *Recorder) Records() []storage.CertificateRecord {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]storage.CertificateRecord(nil), r.records...)
}

// Contexts returns the contexts Record was called with, in order.
func (r *Recorder) Contexts() []context.Context {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]context.Context(nil), r.ctxs...)
}

// Len is the number of records kept.
func (r *Recorder) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.records)
}
