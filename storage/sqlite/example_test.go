package sqlite_test

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/lanyard-id/lanyard/storage"
	"github.com/lanyard-id/lanyard/storage/sqlite"
)

func ExampleNew() {
	dir, err := os.MkdirTemp("", "lanyard-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	ctx := context.Background()
	store, err := sqlite.New(ctx, sqlite.Config{
		Path:   filepath.Join(dir, "state", "lanyard.db"), // state/ is created 0700
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()

	issued := time.Date(2031, 3, 14, 15, 9, 26, 535897932, time.UTC)
	err = store.RecordCertificates(ctx, []storage.CertificateRecord{{
		Serial: "1a", SPIFFEID: "spiffe://cluster.local/ns/shop/sa/cart", Namespace: "shop",
		NotBefore: issued, NotAfter: issued.Add(time.Hour), IssuedAt: issued,
	}})
	if err != nil {
		log.Fatal(err)
	}
	page, err := store.ListCertificates(ctx, storage.CertificateFilter{Namespace: "shop"})
	if err != nil {
		log.Fatal(err)
	}
	for _, c := range page.Certificates {
		fmt.Println(c.Serial, c.SPIFFEID, c.IssuedAt.Equal(issued))
	}
	// Output: 1a spiffe://cluster.local/ns/shop/sa/cart true
}
