// Package storage is the CA's persistent state: the log of issued
// certificates, the node agents, and the audit log.
//
// Store is the interface every backend implements (storage/sqlite for a
// single replica, storage/postgres for several); storage/storagetest is the
// conformance suite they all pass. Callers branch on the sentinel errors
// with errors.Is: ErrNotFound, ErrConflict, ErrInvalidArgument, and
// ErrUnavailable (ErrClosed after Close), which the CA answers with
// codes.Unavailable.
//
// Writer is the group-commit front the CA uses on its hot path. Every
// certificate is recorded before it leaves the CA; Writer.Record blocks
// until the record is durable, and concurrent calls share one transaction,
// so that promise does not cost throughput:
//
//	w, err := storage.NewWriter(storage.WriterConfig{Store: store, Logger: log})
//	...
//	g.Go(func() error { return w.Run(ctx) })
//	...
//	if err := w.Record(ctx, rec); err != nil {
//		return err // never hand out the certificate
//	}
package storage
