package demo

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	pb "github.com/fedweave/fedweave/api/fedweave/v1"
	"github.com/fedweave/fedweave/crypto/pki"
	"github.com/fedweave/fedweave/dataset"
	"github.com/fedweave/fedweave/explain"
	"github.com/fedweave/fedweave/server"
	"github.com/fedweave/fedweave/server/servertest"
)

// Served is the end of a demo: a reader of a member org asks the server's inference service
// to explain the federated model's prediction for one held-out record, over gRPC with mutual
// TLS, authorized by the same policies as training.
type Served struct {
	Reader    string         `json:"reader"`
	Record    string         `json:"record"`
	TrueLabel string         `json:"true_label,omitempty"`
	Result    explain.Result `json:"result"`
	Seconds   float64        `json:"seconds"`
}

// serve explains the first held-out record that carries the most modalities, as a reader of
// client a's org.
func serve(ctx context.Context, f *servertest.Federation, srv *servertest.Running, test *dataset.Dataset, seed uint64) (*Served, error) {
	start := time.Now()
	pick, best := 0, 0
	for i := range test.Records {
		n := 0
		for _, m := range dataset.Modalities {
			if test.Records[i].Has(m) {
				n++
			}
		}
		if n > best {
			pick, best = i, n
		}
	}
	rec := test.Records[pick]
	body, err := dataset.EncodeRecord(&rec, &test.Schema)
	if err != nil {
		return nil, err
	}
	id, err := f.Identity("org-"+clientName(0), pki.RoleReader, "analyst")
	if err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient(srv.Addr, grpc.WithTransportCredentials(credentials.NewTLS(pki.ClientTLS(id, f.Pool(), "127.0.0.1"))))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := pb.NewInferenceClient(conn).Explain(cctx, &pb.ExplainRequest{Record: body, Seed: seed})
	if err != nil {
		return nil, fmt.Errorf("demo: the inference service: %w", err)
	}
	res := server.ExplanationResult(resp)
	res.HeatmapPNG = nil
	if res.Saliency != nil {
		res.Saliency.Values = nil
	}
	s := &Served{Reader: id.Principal.URI(), Record: rec.ID, Result: res, Seconds: time.Since(start).Seconds()}
	if rec.Label >= 0 {
		s.TrueLabel = test.Schema.Classes[rec.Label]
	}
	return s, nil
}
