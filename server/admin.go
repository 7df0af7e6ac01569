package server

import (
	"context"
	"encoding/json"
	"errors"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/fedweave/fedweave/api/fedweave/v1"
	"github.com/fedweave/fedweave/crypto/pki"
	"github.com/fedweave/fedweave/policy"
)

// adminService implements the Admin gRPC service over the server's policy store, the
// authorizer in force and the audit log. The interceptor has authorized every call (ReadPolicy,
// ChangePolicy or ReadAudit on the Federation) before it gets here.
//
// A change is validated against the schema, stored as a new version (with its audit event, in
// one transaction) and put in force at once, under access.mu so that the store's latest
// version is always the set in force. A change that would deny its own author ChangePolicy is
// refused: with the same entity data, nobody could change the policies back.
type adminService struct {
	pb.UnimplementedAdminServer
	s *Server
}

var _ pb.AdminServer = (*adminService)(nil)

// maxTail bounds the entries and bytes of one TailAudit answer (gRPC's receive cap is 4 MiB).
const (
	maxTail      = 1000
	maxTailBytes = 3 << 20
)

func (h *adminService) caller(ctx context.Context) (pki.Principal, error) {
	return principalOf(ctx, h.s.cfg.Federation)
}

func versionPB(v policy.Version) *pb.PolicyVersion {
	return &pb.PolicyVersion{
		Number: v.Number, Author: v.Author, TimeUnixNano: v.Time.UnixNano(), Change: v.Change,
		From: v.From, Removed: v.Removed, Sha256: v.SHA256, Policies: uint32(v.Policies.Len()),
	}
}

// internal logs err and returns a status that says nothing of the server's insides.
func (h *adminService) internal(what string, err error) error {
	h.s.log.Error("admin: "+what, "err", err)
	return status.Errorf(codes.Internal, "%s failed", what)
}

func (h *adminService) ListPolicies(ctx context.Context, _ *pb.ListPoliciesRequest) (*pb.ListPoliciesResponse, error) {
	a := h.s.access
	a.mu.Lock()
	defer a.mu.Unlock()
	cur, err := a.policies.Current()
	if err != nil {
		return nil, h.internal("read the policies in force", err)
	}
	all, err := a.policies.List()
	if err != nil {
		return nil, h.internal("read the policy versions", err)
	}
	resp := &pb.ListPoliciesResponse{Current: versionPB(cur), Ids: a.auth.Policies().IDs()}
	for _, v := range all {
		resp.Versions = append(resp.Versions, versionPB(v))
	}
	return resp, nil
}

func (h *adminService) version(n uint64) (policy.Version, error) {
	a := h.s.access
	var v policy.Version
	var err error
	if n == 0 {
		v, err = a.policies.Current()
	} else {
		v, err = a.policies.Get(n)
	}
	if errors.Is(err, policy.ErrNoVersion) {
		return v, status.Errorf(codes.NotFound, "no policy version %d", n)
	}
	if err != nil {
		return v, h.internal("read the policies", err)
	}
	return v, nil
}

func (h *adminService) GetPolicy(ctx context.Context, req *pb.GetPolicyRequest) (*pb.GetPolicyResponse, error) {
	v, err := h.version(req.GetVersion())
	if err != nil {
		return nil, err
	}
	if req.GetId() == "" {
		return &pb.GetPolicyResponse{Version: v.Number, Text: string(v.Policies.Text())}, nil
	}
	text, ok := v.Policies.Policy(req.GetId())
	if !ok {
		return nil, status.Errorf(codes.NotFound, "no policy %q in version %d", req.GetId(), v.Number)
	}
	return &pb.GetPolicyResponse{Version: v.Number, Text: string(text)}, nil
}

// invalid turns a validation error into InvalidArgument: a first line, then one problem a
// line, as LINE:COLUMN: policy "ID": what is wrong.
func invalid(err error) error {
	var verr *policy.ValidationError
	if errors.As(err, &verr) {
		lines := []string{"the policies were not accepted:"}
		for _, p := range verr.Problems {
			lines = append(lines, p.String())
		}
		return status.Error(codes.InvalidArgument, strings.Join(lines, "\n"))
	}
	return status.Error(codes.InvalidArgument, strings.TrimPrefix(err.Error(), "policy: "))
}

// guard refuses a policy set under which author could not change the policies any more.
func (h *adminService) guard(ps *policy.PolicySet, author pki.Principal) error {
	a := h.s.access
	trial, err := policy.New(a.auth.Schema(), ps, a.auth.Entities())
	if err != nil {
		return invalid(err)
	}
	fed := policy.Ref{Type: "Federation", ID: h.s.cfg.Federation}
	if d := trial.Decide(policy.Request{Principal: author, Action: "ChangePolicy", Resource: fed}); !d.Allow {
		return status.Errorf(codes.FailedPrecondition,
			"the new policies would deny you ChangePolicy on %s (%s), so nobody could change them back: not applied", fed, denialReason(d))
	}
	return nil
}

// put puts a stored version in force. The caller holds access.mu.
func (h *adminService) put(v policy.Version, err error) (*pb.PolicyVersion, error) {
	if err != nil {
		var verr *policy.ValidationError
		if errors.As(err, &verr) {
			return nil, invalid(err)
		}
		return nil, h.internal("store the policies", err)
	}
	if err := h.s.access.auth.SetPolicies(v.Policies); err != nil {
		// The store validated the set against the same schema: this does not happen.
		return nil, h.internal("put the policies in force", err)
	}
	h.s.log.Info("policies changed", "version", v.Number, "change", v.Change, "author", v.Author)
	h.s.signAudit()
	return versionPB(v), nil
}

func (h *adminService) ApplyPolicy(ctx context.Context, req *pb.ApplyPolicyRequest) (*pb.PolicyVersion, error) {
	author, err := h.caller(ctx)
	if err != nil {
		return nil, err
	}
	a := h.s.access
	incoming, err := policy.ParsePolicies("", req.GetText())
	if err != nil {
		return nil, invalid(err)
	}
	if err := a.auth.Schema().Validate(incoming); err != nil {
		return nil, invalid(err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	text := req.GetText()
	if !req.GetReplace() {
		// Merge: the policies of text replace those of the same id, the rest stay.
		base := a.auth.Policies()
		for _, id := range incoming.IDs() {
			if _, ok := base.Policy(id); ok {
				if base, err = base.Without(id); err != nil {
					return nil, h.internal("merge the policies", err)
				}
			}
		}
		text = append(append(base.Text(), '\n'), req.GetText()...)
	}
	next, err := policy.ParsePolicies("", text)
	if err != nil {
		return nil, invalid(err)
	}
	if err := h.guard(next, author); err != nil {
		return nil, err
	}
	return h.put(a.policies.Apply(text, author.URI()))
}

func (h *adminService) RemovePolicy(ctx context.Context, req *pb.RemovePolicyRequest) (*pb.PolicyVersion, error) {
	author, err := h.caller(ctx)
	if err != nil {
		return nil, err
	}
	a := h.s.access
	a.mu.Lock()
	defer a.mu.Unlock()
	cur := a.auth.Policies()
	if _, ok := cur.Policy(req.GetId()); !ok {
		return nil, status.Errorf(codes.NotFound, "no policy %q in force", req.GetId())
	}
	next, err := cur.Without(req.GetId())
	if err != nil {
		return nil, invalid(err)
	}
	if err := h.guard(next, author); err != nil {
		return nil, err
	}
	return h.put(a.policies.Remove(req.GetId(), author.URI()))
}

func (h *adminService) RollbackPolicy(ctx context.Context, req *pb.RollbackPolicyRequest) (*pb.PolicyVersion, error) {
	author, err := h.caller(ctx)
	if err != nil {
		return nil, err
	}
	if req.GetVersion() == 0 {
		return nil, status.Error(codes.InvalidArgument, "roll back to which version? versions are numbered from 1")
	}
	a := h.s.access
	a.mu.Lock()
	defer a.mu.Unlock()
	old, err := h.version(req.GetVersion())
	if err != nil {
		return nil, err
	}
	if err := h.guard(old.Policies, author); err != nil {
		return nil, err
	}
	return h.put(a.policies.Rollback(old.Number, author.URI()))
}

func (h *adminService) CheckPolicy(ctx context.Context, req *pb.CheckPolicyRequest) (*pb.CheckPolicyResponse, error) {
	p, err := pki.ParsePrincipal(req.GetPrincipal())
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "principal: want fedweave://FEDERATION/org/ORG/ROLE/NAME")
	}
	res, err := policy.ParseRef(req.GetResource())
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, `resource: want TYPE::"ID", as Task::"triage"`)
	}
	var reqCtx map[string]any
	if c := req.GetContextJson(); c != "" {
		dec := json.NewDecoder(strings.NewReader(c))
		dec.UseNumber()
		if err := dec.Decode(&reqCtx); err != nil || dec.More() {
			return nil, status.Error(codes.InvalidArgument, "context: want one JSON object")
		}
	}
	d := h.s.access.auth.Decide(policy.Request{Principal: p, Action: req.GetAction(), Resource: res, Context: reqCtx})
	return &pb.CheckPolicyResponse{Allow: d.Allow, Reasons: d.Reasons, Errors: d.Errors}, nil
}

func (h *adminService) TailAudit(ctx context.Context, req *pb.TailAuditRequest) (*pb.TailAuditResponse, error) {
	log := h.s.access.audit
	n := uint64(req.GetN())
	if n == 0 {
		n = 20
	}
	n = min(n, maxTail)
	size, err := log.Size()
	if err != nil {
		return nil, h.internal("read the audit log", err)
	}
	from := size - min(n, size)
	entries, err := log.Entries(from, size)
	if err != nil {
		return nil, h.internal("read the audit log", err)
	}
	// Keep the newest entries that fit.
	total, first := 0, len(entries)
	for first > 0 && total+len(entries[first-1].Raw) <= maxTailBytes {
		first--
		total += len(entries[first].Raw)
	}
	resp := &pb.TailAuditResponse{Size: size}
	for _, e := range entries[first:] {
		resp.Entries = append(resp.Entries, &pb.AuditEntry{Index: e.Index, Event: e.Raw})
	}
	if cps, err := log.Checkpoints(); err == nil && len(cps) > 0 {
		text, _ := cps[len(cps)-1].MarshalText()
		resp.Checkpoint = string(text)
	}
	return resp, nil
}
