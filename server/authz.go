package server

// Authorization of every call. Both interceptors do the same: the principal from the verified
// client certificate, the action from the method (policy.ActionForMethod), the resource from
// the request, and a cedar decision (policy.Authorizer) before the handler runs. Deny by
// default: a method without an action, a request without a resource, a request that no policy
// permits, all get codes.PermissionDenied. The message says which action on which resource was
// denied and why, as far as an admin may be told (the ids of the policies that decided, "no
// policy permits this", or what is wrong with the request itself); it names no other party.
//
// What the audit log gets: every denial, and the allowed calls it keeps (Join, DownloadModel),
// appended before the handler runs. If the log cannot take an allowed call's entry, the call
// is refused (codes.Unavailable): nothing happens that the log does not record.
//
// The resource of each method:
//
//	Join, DescribeTask        Task::"<request's task>" (Join's context: the modalities declared)
//	Participate               Task::"<the server's task>": a stream is for the server's one
//	                          task, and the service refuses a Hello that names another
//	DownloadModel             Model::"<task>/<round>", round 0 resolved to the latest committed
//	Inference service         Model::"<task>/<round>" (empty task: the server's), round 0
//	                          resolved to the latest committed model that is not tainted
//	Admin service             Federation::"<the server's federation>", but EraseOrg:
//	                          Org::"<the org to erase>"
//
// Exempt: the gRPC health service (grpc.health.v1.Health), for every verified principal of the
// federation. Liveness probes run with whatever certificate the operator's tooling holds, the
// answer reveals nothing about any party (SERVING or not), the schema has no action for it, and
// a health check that cedar could deny (say, while the entity data lists no member yet) would
// make a working server look dead. The TLS handshake has already refused every certificate
// that is not of the federation, and principalOf refuses those without a principal.

import (
	"context"
	"slices"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "github.com/fedweave/fedweave/api/fedweave/v1"
	"github.com/fedweave/fedweave/crypto/pki"
	"github.com/fedweave/fedweave/policy"
)

// Full method names the interceptors treat apart.
const (
	methodParticipate  = "/fedweave.v1.Federation/Participate"
	methodDescribeTask = "/fedweave.v1.Federation/DescribeTask"
	healthService      = "/grpc.health.v1.Health/"
	adminPrefix        = "/fedweave.v1.Admin/"
)

// authorizeUnary is the unary interceptor.
func (s *Server) authorizeUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	p, err := principalOf(ctx, s.cfg.Federation)
	if err != nil {
		return nil, err
	}
	if strings.HasPrefix(info.FullMethod, healthService) {
		return handler(ctx, req)
	}
	if err := s.authorizeCall(p, info.FullMethod, req); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

// authorizeStream is the stream interceptor. Participate is decided when the stream opens;
// the other streams carry their resource in their first message, so they are decided when the
// handler reads it, and may send nothing before.
func (s *Server) authorizeStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	p, err := principalOf(ss.Context(), s.cfg.Federation)
	if err != nil {
		return err
	}
	if strings.HasPrefix(info.FullMethod, healthService) {
		return handler(srv, ss)
	}
	if info.FullMethod == methodParticipate {
		if err := s.authorizeCall(p, info.FullMethod, nil); err != nil {
			return err
		}
		if s.opt.OnUpdate != nil {
			ss = &updateTap{ServerStream: ss, principal: p.URI(), fn: s.opt.OnUpdate}
		}
		return handler(srv, ss)
	}
	return handler(srv, &authzStream{ServerStream: ss, s: s, p: p, method: info.FullMethod})
}

// authorizeCall decides one call: msg is its request (nil for Participate). The error is the
// status to return.
func (s *Server) authorizeCall(p pki.Principal, method string, msg any) error {
	action, ok := policy.ActionForMethod(method)
	if !ok {
		s.deny(policy.Request{Principal: p, Action: method}, "no action authorizes this method")
		return status.Errorf(codes.PermissionDenied, "permission denied: %s: no action authorizes this method", method)
	}
	req := policy.Request{Principal: p, Action: action}
	t := s.cfg.Task.Name
	switch m := msg.(type) {
	case *pb.JoinRequest:
		req.Resource = policy.Ref{Type: "Task", ID: m.GetTask()}
		mods := []string{}
		for _, mc := range m.GetModalities() {
			if mc.GetRecords() > 0 && !slices.Contains(mods, mc.GetModality()) {
				mods = append(mods, mc.GetModality())
			}
		}
		req.Context = map[string]any{"modalities": mods}
	case *pb.DescribeTaskRequest:
		req.Resource = policy.Ref{Type: "Task", ID: m.GetTask()}
	case *pb.EraseOrgRequest:
		req.Resource = policy.Ref{Type: "Org", ID: m.GetOrg()}
	case *pb.DownloadRequest:
		round := m.GetRound()
		if round == 0 {
			round, _ = s.latestServable()
			// The handler serves exactly the model decided on, even if a round commits
			// in between.
			m.Round = round
		}
		req.Resource = policy.Ref{Type: "Model", ID: modelName(m.GetTask(), round)}
	case *pb.PredictRequest:
		// As for DownloadModel, the handler serves exactly the model decided on.
		req.Resource = s.inferenceResource(&m.Task, &m.Round)
	case *pb.ExplainRequest:
		req.Resource = s.inferenceResource(&m.Task, &m.Round)
	case nil:
		if method != methodParticipate {
			return status.Errorf(codes.PermissionDenied, "permission denied: %s: no request to decide on", method)
		}
		req.Resource = policy.Ref{Type: "Task", ID: t}
	default:
		if !strings.HasPrefix(method, adminPrefix) {
			s.deny(req, "the server cannot tell the resource of this request")
			return status.Errorf(codes.PermissionDenied, "permission denied: %s: the server cannot tell the resource of this request", method)
		}
		req.Resource = policy.Ref{Type: "Federation", ID: s.cfg.Federation}
	}
	return s.authorize(method, req)
}

// authorize decides req, records what the audit log keeps, and returns the status to refuse
// the call with, or nil.
func (s *Server) authorize(method string, req policy.Request) error {
	d := s.access.auth.Decide(req)
	if !d.Allow {
		why := denialReason(d)
		s.deny(req, why, d.Reasons...)
		if len(d.Errors) > 0 {
			s.log.Debug("decision errors", "principal", req.Principal.URI(), "action", req.Action, "errors", strings.Join(d.Errors, "; "))
		}
		return status.Errorf(codes.PermissionDenied, "permission denied: %s on %s: %s", req.Action, req.Resource, why)
	}
	if method == methodDescribeTask {
		return nil // a read, not a join
	}
	ev, ok := policy.AuditEvent(req, d)
	if !ok {
		return nil
	}
	if mods, ok := req.Context["modalities"].([]string); ok {
		if ev.Details == nil {
			ev.Details = map[string]string{}
		}
		ev.Details["modalities"] = strings.Join(mods, " ")
	}
	if err := s.appendAudit(ev); err != nil {
		return status.Error(codes.Unavailable, "the server cannot record this call in its audit log; try again later")
	}
	return nil
}

// deny logs a denial and appends it to the audit log.
func (s *Server) deny(req policy.Request, why string, reasons ...string) {
	ev := policy.Event{
		Type: policy.EventDenial, Principal: req.Principal.URI(), Action: req.Action,
		Decision: "deny", Details: map[string]string{"reason": why},
	}
	if req.Resource != (policy.Ref{}) {
		ev.Resource = req.Resource.String()
	}
	if len(reasons) > 0 {
		ev.Details["policies"] = strings.Join(reasons, " ")
	}
	s.log.Warn("call denied", "principal", ev.Principal, "action", ev.Action, "resource", ev.Resource, "reason", why)
	s.appendAudit(ev)
}

// denialReason says why d denied, in words an admin may read: the forbids that applied, what
// was wrong with the request, or that nothing permitted it. Errors of policies that could not
// be evaluated stay in the server's log: they may name other entities.
func denialReason(d policy.Decision) string {
	if len(d.Reasons) > 0 {
		noun := "policy"
		if len(d.Reasons) > 1 {
			noun = "policies"
		}
		return "denied by " + noun + " " + strings.Join(d.Reasons, ", ")
	}
	for _, e := range d.Errors {
		if rest, ok := strings.CutPrefix(e, "request: "); ok {
			return rest
		}
	}
	return "no policy permits this"
}

// stillAuthorized keeps the sessions whose principal may still SubmitUpdate to the task, and
// ends the others' streams with PermissionDenied: a policy change takes effect on open round
// channels before the next cohort is chosen.
func (s *Server) stillAuthorized(live []*session) []*session {
	out := make([]*session, 0, len(live))
	for _, ss := range live {
		p, err := pki.ParsePrincipal(ss.key)
		if err == nil {
			err = s.authorizeCall(p, methodParticipate, nil)
		}
		if err != nil {
			ss.fail(err)
			continue
		}
		out = append(out, ss)
	}
	return out
}

// authzStream decides a stream's call when the handler reads its first message.
type authzStream struct {
	grpc.ServerStream
	s       *Server
	p       pki.Principal
	method  string
	decided bool
}

var errUndecided = status.Error(codes.PermissionDenied, "permission denied: the call was not authorized")

func (a *authzStream) RecvMsg(m any) error {
	if err := a.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	if !a.decided {
		if err := a.s.authorizeCall(a.p, a.method, m); err != nil {
			return err
		}
		a.decided = true
	}
	return nil
}

func (a *authzStream) SendMsg(m any) error {
	if !a.decided {
		return errUndecided
	}
	return a.ServerStream.SendMsg(m)
}

func (a *authzStream) SendHeader(md metadata.MD) error {
	if !a.decided {
		return errUndecided
	}
	return a.ServerStream.SendHeader(md)
}

// maxTapped bounds the message an updateTap reassembles.
const maxTapped = 1 << 30

// updateTap hands each phase-0 message of a round channel, reassembled from its chunks, to
// Options.OnUpdate, as received and before any check.
type updateTap struct {
	grpc.ServerStream
	principal string
	fn        func(principal string, round uint64, msg []byte)
	buf       []byte
}

func (t *updateTap) RecvMsg(m any) error {
	if err := t.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	ph := func() *pb.PhaseMessage {
		if cm, ok := m.(*pb.ClientMessage); ok {
			return cm.GetPhase()
		}
		return nil
	}()
	if ph == nil || ph.GetPhase() != 0 {
		return nil
	}
	if ph.GetIndex() == 0 {
		t.buf = t.buf[:0]
	}
	if len(t.buf)+len(ph.GetData()) > maxTapped {
		t.buf = t.buf[:0]
		return nil
	}
	t.buf = append(t.buf, ph.GetData()...)
	if ph.GetIndex()+1 == ph.GetTotal() {
		t.fn(t.principal, ph.GetRound(), slices.Clone(t.buf))
		t.buf = t.buf[:0]
	}
	return nil
}
