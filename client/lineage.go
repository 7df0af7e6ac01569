package client

import (
	"errors"
	"fmt"
	"sync"

	pb "github.com/fedweave/fedweave/api/fedweave/v1"
	"github.com/fedweave/fedweave/dataset"
	"github.com/fedweave/fedweave/internal/lineage"
	"github.com/fedweave/fedweave/internal/store"
)

// Dataset lineage on the client's side.
//
// With each round's evaluation report the client sends a commitment to the records it trains
// the round on (its training split, after the sharing policy), signed with its certificate's
// key (internal/lineage). The commitment is keyed by a secret salt, so that it tells the server
// nothing about the records (only whether they changed between rounds): the server cannot
// confirm a guessed dataset or record with it.
//
// A client with an encrypted Store keeps its salt there, sealed under the store's own key, as
// the secret LineageSaltSecret: created on first use, the same for every task and every run of
// the client on that store, so that the partner can later open any commitment it made, by
// revealing the salt (Store.Secret(LineageSaltSecret)) and the records to a verifier
// (lineage.Open). A client without a Store draws a fresh salt and keeps it in memory only:
// such a client cannot open its commitments after it exits.

// LineageSaltSecret is the name of the Store secret that holds the salt of the client's dataset
// commitments.
const LineageSaltSecret = "lineage/salt"

// commitment is the client's signed commitment to the dataset version it trains on, cached
// for the records it was computed over, and the salt it is keyed by.
type commitment struct {
	salt []byte // nil until first needed
	over *dataset.Dataset
	sum  []byte
}

// commit puts into e the commitment to the client's training records and its signature,
// bound to the task, the round and the layout hash (internal/lineage). When the commitment
// cannot be made (the salt cannot be read from or created in the store) it logs why and leaves
// e without a commitment: the server then records no lineage entry for the client that round.
func (c *Client) commit(e *pb.EvalReport, layoutHash string) {
	sum, err := c.commitmentSum()
	if err != nil {
		c.log.Warn("no dataset commitment in this round's evaluation report", "round", e.GetRound(), "err", err)
		e.DatasetCommitment, e.Signature = nil, nil
		return
	}
	e.DatasetCommitment = sum
	e.Signature = c.cfg.Identity.Key.Sign(lineage.Message(c.cfg.Task, e.GetRound(), layoutHash, sum))
}

// commitmentSum returns the commitment to the client's training records, computing it when
// they changed.
func (c *Client) commitmentSum() ([]byte, error) {
	if c.commitment.salt == nil {
		salt, err := lineageSalt(c.cfg.Store)
		if err != nil {
			return nil, err
		}
		c.commitment = commitment{salt: salt}
	}
	if c.commitment.over != c.train || c.commitment.sum == nil {
		sum, err := lineage.Commit(c.train, c.commitment.salt)
		if err != nil {
			return nil, fmt.Errorf("client: dataset commitment: %w", err)
		}
		c.commitment.over, c.commitment.sum = c.train, sum
	}
	return c.commitment.sum, nil
}

// lineageSaltMu serializes the salt's creation, for clients of one process sharing a store (a
// store is open in one process at a time), so that they all end up with the stored salt.
var lineageSaltMu sync.Mutex

// lineageSalt returns the salt of the dataset commitments: the one kept in st, created and
// stored there on first use; without a store (nil), a fresh one.
func lineageSalt(st *Store) ([]byte, error) {
	if st == nil {
		return lineage.NewSalt()
	}
	lineageSaltMu.Lock()
	defer lineageSaltMu.Unlock()
	salt, err := st.Secret(LineageSaltSecret)
	switch {
	case err == nil:
		if len(salt) != lineage.SaltSize {
			return nil, fmt.Errorf("client: the store's lineage salt is %d bytes, want %d", len(salt), lineage.SaltSize)
		}
		return salt, nil
	case !errors.Is(err, store.ErrNotFound):
		return nil, fmt.Errorf("client: the store's lineage salt: %w", err)
	}
	if salt, err = lineage.NewSalt(); err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	if err := st.PutSecret(LineageSaltSecret, salt); err != nil {
		return nil, fmt.Errorf("client: store the lineage salt: %w", err)
	}
	return salt, nil
}
