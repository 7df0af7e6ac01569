package client

import (
	"context"
	"errors"
	"fmt"

	"github.com/fedweave/fedweave/dataset"
)

// How the encrypted record store (Config.Store) feeds a running client, and how an erasure
// reaches it: the records are read from the store when Run starts, and again before any round
// whose start finds the store changed (Store.Generation), so that a subject erased while the
// client runs is in no later round's training or evaluation.

// errNoRecords: the store has no record left to train on.
var errNoRecords = errors.New("client: the record store holds no records")

// records returns the records to train on: the Source's, or, with a Store, the Source's
// imported into the Store and read back from it.
func (c *Client) records(ctx context.Context) (*dataset.Dataset, error) {
	st := c.cfg.Store
	if st == nil {
		return c.cfg.Source.Records(ctx)
	}
	if c.cfg.Source != nil {
		d, err := c.cfg.Source.Records(ctx)
		if err != nil {
			return nil, err
		}
		stats, err := st.Import(ctx, d)
		if err != nil {
			return nil, err
		}
		c.log.Info("records imported into the store", "records", stats.Records, "skipped_erased", stats.Erased)
	}
	c.storeGen = st.Generation()
	d, err := st.Dataset(ctx)
	if err != nil {
		return nil, err
	}
	if len(d.Records) == 0 {
		return nil, errNoRecords
	}
	return d, nil
}

// refresh reloads the records from the store if they changed since they were loaded.
func (r *round) refresh(ctx context.Context) error {
	c := r.c
	st := c.cfg.Store
	if st == nil || st.Generation() == c.storeGen {
		return nil
	}
	gen := st.Generation()
	d, err := st.Dataset(ctx)
	if err != nil {
		return fmt.Errorf("client: reload records: %w", err)
	}
	if d = c.cfg.Sharing.Strip(d); len(d.Records) == 0 {
		return errNoRecords
	}
	train, test := dataset.Split(d, c.cfg.TestFrac, c.cfg.Seed)
	if r.train, err = r.m.Encode(train); err != nil {
		return fmt.Errorf("client: local records do not fit the task's model: %w", err)
	}
	if r.test, err = r.m.Encode(test); err != nil {
		return fmt.Errorf("client: local records do not fit the task's model: %w", err)
	}
	c.train, c.test, c.storeGen = train, test, gen
	c.log.Info("records reloaded from the store", "records", len(d.Records))
	return nil
}
