package client

import (
	pb "github.com/fedweave/fedweave/api/fedweave/v1"
	"github.com/fedweave/fedweave/dataset"
	"github.com/fedweave/fedweave/internal/lineage"
)

// commitment is the client's signed commitment to the dataset version it trains on, cached
// for the records it was computed over.
type commitment struct {
	over *dataset.Dataset
	sum  []byte
}

// commit puts into e the commitment to the client's training records and its signature,
// bound to the task, the round and the layout hash (internal/lineage).
func (c *Client) commit(e *pb.EvalReport, layoutHash string) {
	if c.commitment.over != c.train || c.commitment.sum == nil {
		c.commitment = commitment{over: c.train, sum: lineage.Commit(c.train)}
	}
	e.DatasetCommitment = c.commitment.sum
	e.Signature = c.cfg.Identity.Key.Sign(lineage.Message(c.cfg.Task, e.GetRound(), layoutHash, c.commitment.sum))
}
