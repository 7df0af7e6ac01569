package client_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/fedweave/fedweave/client"
	"github.com/fedweave/fedweave/dataset"
)

// A partner keeps its records in an encrypted store, and erases one data subject: its data key
// is shredded, its records are gone, and a later import of the same source skips them.
func ExampleStore_EraseSubject() {
	dir, err := os.MkdirTemp("", "fedweave-store-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	st, err := client.OpenStore(client.StoreOptions{Dir: filepath.Join(dir, "records"), KeyDir: filepath.Join(dir, "keys")})
	if err != nil {
		log.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	source := dataset.Synthetic(dataset.SyntheticConfig{N: 10, Seed: 1})
	if _, err := st.Import(ctx, source); err != nil {
		log.Fatal(err)
	}
	n, err := st.EraseSubject("syn-000003")
	if err != nil {
		log.Fatal(err)
	}
	stats, _ := st.Import(ctx, source) // the source still has the subject's record
	all, _ := st.Dataset(ctx)
	fmt.Printf("erased %d record; re-import skipped %d; %d records left\n", n, stats.Erased, len(all.Records))
	// Output: erased 1 record; re-import skipped 1; 9 records left
}
