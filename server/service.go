package server

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	pb "github.com/fedweave/fedweave/api/fedweave/v1"
	"github.com/fedweave/fedweave/crypto/pki"
)

// service implements the Federation gRPC service.
type service struct {
	pb.UnimplementedFederationServer
	s *Server
}

// client returns the calling client's principal, refusing callers that are not clients of the
// federation.
func (h *service) client(ctx context.Context) (pki.Principal, error) {
	p, err := principalOf(ctx, h.s.cfg.Federation)
	if err != nil {
		return p, err
	}
	if p.Role != pki.RoleClient {
		return p, status.Errorf(codes.PermissionDenied, "role %s may not take part in training", p.Role)
	}
	return p, nil
}

func (h *service) Join(ctx context.Context, req *pb.JoinRequest) (*pb.JoinResponse, error) {
	p, err := h.client(ctx)
	if err != nil {
		return nil, err
	}
	t := &h.s.cfg.Task
	if req.GetTask() != t.Name {
		return nil, status.Errorf(codes.NotFound, "no task %q on this server", req.GetTask())
	}
	for _, m := range req.GetModalities() {
		switch m.GetModality() {
		case "text", "image", "tabular":
		default:
			return nil, status.Errorf(codes.InvalidArgument, "unknown modality %q", m.GetModality())
		}
	}
	spec, _ := json.Marshal(h.s.spec)
	h.s.mu.Lock()
	next := h.s.head.NextRound
	h.s.joined[p.URI()] = req.GetRecords()
	h.s.mu.Unlock()
	h.s.log.Info("client joined", "client", p.URI(), "records", req.GetRecords())
	return &pb.JoinResponse{
		Task: t.Name, Federation: h.s.cfg.Federation, ModelSpec: spec, LayoutHash: h.s.hash,
		Secure: t.Secure, Rounds: uint64(t.Rounds), NextRound: next,
		Purpose: t.Purpose, Modalities: h.s.taskModalities(),
	}, nil
}

func (h *service) Participate(stream pb.Federation_ParticipateServer) error {
	ctx := stream.Context()
	p, err := h.client(ctx)
	if err != nil {
		return err
	}
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	hello := first.GetHello()
	if hello == nil {
		return status.Error(codes.InvalidArgument, "the first message must be a Hello")
	}
	if hello.GetTask() != h.s.cfg.Task.Name {
		return status.Errorf(codes.NotFound, "no task %q on this server", hello.GetTask())
	}
	select {
	case <-h.s.done:
		return stream.Send(&pb.ServerMessage{Body: &pb.ServerMessage_Done{Done: &pb.TaskDone{Rounds: uint64(h.s.cfg.Task.Rounds)}}})
	default:
	}
	ss := newSession(p)
	ss.cert = peerCert(ctx)
	h.s.register(ss)
	defer h.s.unregister(ss)

	go func() {
		for {
			m, err := stream.Recv()
			if err != nil {
				if errors.Is(err, io.EOF) {
					err = nil
				}
				ss.fail(err)
				return
			}
			select {
			case h.s.inbox <- inbound{s: ss, msg: m}:
			case <-ss.closed:
				return
			}
		}
	}()
	for {
		select {
		case m := <-ss.out:
			if err := stream.Send(m); err != nil {
				ss.fail(err)
				return err
			}
			if m.GetDone() != nil {
				ss.fail(nil)
				return nil
			}
		case <-ss.closed:
			return ss.err()
		case <-ctx.Done():
			ss.fail(ctx.Err())
			return ctx.Err()
		}
	}
}

// register adds a session; an older session of the same principal is replaced.
func (s *Server) register(ss *session) {
	s.mu.Lock()
	old := s.sessions[ss.key]
	s.sessions[ss.key] = ss
	n := len(s.sessions)
	s.mu.Unlock()
	if old != nil {
		old.fail(status.Error(codes.Aborted, "replaced by a newer connection of the same client"))
	}
	s.metrics.connected.Set(float64(n))
}

func (s *Server) unregister(ss *session) {
	s.mu.Lock()
	if s.sessions[ss.key] == ss {
		delete(s.sessions, ss.key)
	}
	n := len(s.sessions)
	s.mu.Unlock()
	s.metrics.connected.Set(float64(n))
}

// session is one client's open Participate stream.
type session struct {
	key    string            // principal URI
	cert   *x509.Certificate // the verified leaf certificate of the stream (nil in unit tests)
	out    chan *pb.ServerMessage
	closed chan struct{}
	once   sync.Once
	mu     sync.Mutex
	cause  error
}

type inbound struct {
	s   *session
	msg *pb.ClientMessage
}

func newSession(p pki.Principal) *session {
	return &session{key: p.URI(), out: make(chan *pb.ServerMessage, 64), closed: make(chan struct{})}
}

// send queues m for the client; false if the session is gone.
func (ss *session) send(m *pb.ServerMessage) bool {
	select {
	case <-ss.closed:
		return false
	default:
	}
	select {
	case ss.out <- m:
		return true
	case <-ss.closed:
		return false
	}
}

// sendChunked sends a phase message in chunks.
func (ss *session) sendChunked(round uint64, phase int, msg []byte) bool {
	parts := chunk(msg)
	for i, c := range parts {
		if !ss.send(&pb.ServerMessage{Body: &pb.ServerMessage_Phase{Phase: &pb.PhaseMessage{
			Round: round, Phase: uint32(phase), Index: uint32(i), Total: uint32(len(parts)), Data: c,
		}}}) {
			return false
		}
	}
	return true
}

// fail closes the session with err (nil: a clean end).
func (ss *session) fail(err error) {
	ss.once.Do(func() {
		ss.mu.Lock()
		ss.cause = err
		ss.mu.Unlock()
		close(ss.closed)
	})
}

func (ss *session) err() error {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.cause
}

func (ss *session) alive() bool {
	select {
	case <-ss.closed:
		return false
	default:
		return true
	}
}

// peerCert returns the verified leaf certificate of a call's TLS connection, or nil.
func peerCert(ctx context.Context) *x509.Certificate {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.VerifiedChains) == 0 || len(ti.State.VerifiedChains[0]) == 0 {
		return nil
	}
	return ti.State.VerifiedChains[0][0]
}
