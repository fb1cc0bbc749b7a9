package storage_test

import (
	"context"
	"fmt"
	"sync"

	"github.com/lanyard-id/lanyard/storage"
)

// fakeStore is an in-memory Store for the writer tests. Only the methods
// the writer calls are implemented; the embedded nil interface makes any
// other call panic. RecordCertificates can be held (gate) or made to fail.
type fakeStore struct {
	storage.Store

	// gate, when non-nil, holds every RecordCertificates until it can
	// receive from it (or close it) or ctx ends.
	gate chan struct{}
	// fail, when set, decides the outcome of a batch before conflicts.
	fail func(recs []storage.CertificateRecord) error

	mu        sync.Mutex
	batches   []int // size of every RecordCertificates call
	committed map[string]storage.CertificateRecord
	audit     []storage.AuditEvent
	auditErr  error
}

func newFakeStore() *fakeStore {
	return &fakeStore{committed: map[string]storage.CertificateRecord{}}
}

func (f *fakeStore) RecordCertificates(ctx context.Context, recs []storage.CertificateRecord) error {
	f.mu.Lock()
	f.batches = append(f.batches, len(recs))
	f.mu.Unlock()
	if f.gate != nil {
		select {
		case <-f.gate:
		case <-ctx.Done():
			return fmt.Errorf("fake: %w", ctx.Err())
		}
	}
	if f.fail != nil {
		if err := f.fail(recs); err != nil {
			return err
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	seen := map[string]bool{}
	for _, r := range recs {
		if _, ok := f.committed[r.Serial]; ok || seen[r.Serial] {
			return fmt.Errorf("fake: serial %s: %w", r.Serial, storage.ErrConflict)
		}
		seen[r.Serial] = true
	}
	for _, r := range recs {
		f.committed[r.Serial] = r
	}
	return nil
}

func (f *fakeStore) AppendAudit(_ context.Context, events []storage.AuditEvent) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.auditErr != nil {
		return f.auditErr
	}
	f.audit = append(f.audit, events...)
	return nil
}

func (f *fakeStore) batchSizes() []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]int(nil), f.batches...)
}

func (f *fakeStore) has(serial string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.committed[serial]
	return ok
}

func (f *fakeStore) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.committed)
}

func (f *fakeStore) auditEvents() []storage.AuditEvent {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]storage.AuditEvent(nil), f.audit...)
}
