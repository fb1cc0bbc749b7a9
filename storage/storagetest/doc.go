// Package storagetest is the conformance suite of storage.Store. Every
// implementation runs it from its own tests:
//
//	func TestConformance(t *testing.T) {
//		storagetest.Run(t, func(t *testing.T) storage.Store {
//			s, err := sqlite.New(t.Context(), sqlite.Config{Path: filepath.Join(t.TempDir(), "lanyard.db")})
//			require.NoError(t, err)
//			t.Cleanup(func() { _ = s.Close() })
//			return s
//		})
//	}
//
// The suite pins down the behaviour callers rely on and the interface
// documents: exact (nanosecond, UTC) time round trips, all-or-nothing
// batches, the sentinel errors, newest-first keyset paging without gaps or
// duplicates, agent upserts that keep FirstSeen and Banned, errors after
// Close and on an ended context.
package storagetest
