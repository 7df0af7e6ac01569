package server

import (
	"context"
	"encoding/json"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/fedweave/fedweave/api/fedweave/v1"
	"github.com/fedweave/fedweave/internal/store"
)

// The task's terms and its committed models, as the Federation service serves them. Both calls
// are authorized by the interceptor (authz.go) before they get here: DescribeTask as Join on
// the task, DownloadModel as DownloadModel on the model, with round 0 already resolved to the
// latest committed round.

func (h *service) DescribeTask(ctx context.Context, req *pb.DescribeTaskRequest) (*pb.TaskInfo, error) {
	t := &h.s.cfg.Task
	if req.GetTask() != t.Name {
		return nil, status.Errorf(codes.NotFound, "no task %q on this server", req.GetTask())
	}
	return &pb.TaskInfo{
		Task: t.Name, Federation: h.s.cfg.Federation, Purpose: t.Purpose,
		Modalities: h.s.taskModalities(), Secure: t.Secure,
	}, nil
}

func (h *service) DownloadModel(req *pb.DownloadRequest, stream pb.Federation_DownloadModelServer) error {
	s := h.s
	task := s.cfg.Task.Name
	if req.GetTask() != task || req.GetRound() == 0 {
		return status.Errorf(codes.NotFound, "no committed model of task %q", req.GetTask())
	}
	round := req.GetRound()
	b, err := checkpointBytes(s.store, s.rest.ring, task, round)
	if errors.Is(err, store.ErrNotFound) {
		return status.Errorf(codes.NotFound, "no committed model of task %q at round %d", task, round)
	}
	if err != nil {
		s.log.Error("read checkpoint for download", "round", round, "err", err)
		return status.Error(codes.Internal, "the model cannot be read")
	}
	params, _, err := decodeCheckpoint(b, s.hashRaw, s.layout.Size())
	if err != nil {
		s.log.Error("decode checkpoint for download", "round", round, "err", err)
		return status.Error(codes.Internal, "the model cannot be read")
	}
	spec, _ := json.Marshal(s.spec)
	chunks := chunk(float32Bytes(params))
	for i, c := range chunks {
		m := &pb.ModelChunk{Round: round, Index: uint32(i), Total: uint32(len(chunks)), Data: c}
		if i == 0 {
			m.LayoutHash, m.ModelSpec = s.hash, spec
		}
		if err := stream.Send(m); err != nil {
			return err
		}
	}
	return nil
}
