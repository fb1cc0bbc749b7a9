package storage_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/lanyard-id/lanyard/storage"
	"github.com/lanyard-id/lanyard/storage/sqlite"
)

// A CA records every certificate through a Writer before it answers.
func ExampleWriter() {
	dir, err := os.MkdirTemp("", "lanyard-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	store, err := sqlite.New(ctx, sqlite.Config{Path: filepath.Join(dir, "lanyard.db")})
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()

	w, err := storage.NewWriter(storage.WriterConfig{Store: store})
	if err != nil {
		log.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }() // in the CA: an errgroup goroutine

	now := time.Now()
	err = w.Record(ctx, storage.CertificateRecord{
		Serial:    "6c1f2a",
		SPIFFEID:  "spiffe://cluster.local/ns/shop/sa/cart",
		Kind:      "workload",
		Namespace: "shop",
		NotBefore: now,
		NotAfter:  now.Add(time.Hour),
		IssuedAt:  now,
	})
	if err != nil {
		log.Fatal(err) // the CA answers codes.Unavailable and keeps the certificate
	}

	cancel() // shut down: Run flushes what is queued and returns
	if err := <-done; err != nil {
		log.Fatal(err)
	}
	got, err := store.GetCertificate(context.Background(), "6c1f2a")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(got.SPIFFEID, w.Stats().Records)
	// Output: spiffe://cluster.local/ns/shop/sa/cart 1
}
