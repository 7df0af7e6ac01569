package store_test

import (
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/fedweave/fedweave/internal/store"
)

// A server keeps its round history in a store: one key per round, read back in order.
func Example() {
	tmp, err := os.MkdirTemp("", "store-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(tmp)

	// Once, at setup: a master key file, readable by its owner only.
	keyFile := filepath.Join(tmp, "master.key")
	if err := store.NewKeyFile(keyFile); err != nil {
		log.Fatal(err)
	}

	s, err := store.Open(store.Options{Dir: filepath.Join(tmp, "server"), KeyFile: keyFile})
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()

	// The checkpoint and the round record commit together, or not at all.
	for r := 1; r <= 3; r++ {
		err := s.Update(func(tx *store.Tx) error {
			if err := tx.Put(fmt.Appendf(nil, "ckpt/%06d", r), []byte("parameters...")); err != nil {
				return err
			}
			return tx.Put(fmt.Appendf(nil, "round/%06d", r), fmt.Appendf(nil, "%d clients", 3+r))
		})
		if err != nil {
			log.Fatal(err)
		}
	}

	err = s.Scan([]byte("round/"), func(key, val []byte) error {
		fmt.Printf("%s: %s\n", key, val)
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}

	_, err = s.Get([]byte("round/000004"))
	fmt.Println(err)

	// Output:
	// round/000001: 4 clients
	// round/000002: 5 clients
	// round/000003: 6 clients
	// store: not found
}
