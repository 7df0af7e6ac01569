package server

// Retention rules set by admins (Admin.GetRetention, Admin.SetRetention): a rule stored in the
// server's store overrides Config.Retention from the moment it is set, across restarts, and is
// applied at the next commit. Setting it is authorized as ManageRetention on the Federation and
// audited as a policy_change event.

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/fedweave/fedweave/api/fedweave/v1"
	"github.com/fedweave/fedweave/internal/store"
	"github.com/fedweave/fedweave/policy"
)

func keyRetention(task string) []byte { return []byte("task/" + task + "/retention") }

// maxRetention bounds the checkpoints a rule may keep (it is a count, not a round number).
const maxRetention = 1 << 20

// RetentionRule is the retention rule in force: Config.Retention's ("config"), or one set by
// an admin ("admin"), who is named with the time it was set.
type RetentionRule struct {
	Checkpoints int       `json:"checkpoints"`
	Source      string    `json:"source"`
	SetBy       string    `json:"set_by,omitempty"`
	Set         time.Time `json:"set,omitzero"`
}

// Retention returns the retention rule in force.
func (s *Server) Retention() (RetentionRule, error) {
	var rule RetentionRule
	found, err := loadJSON(s.store, keyRetention(s.cfg.Task.Name), &rule)
	if err != nil {
		return RetentionRule{}, fmt.Errorf("server: read the retention rule: %w", err)
	}
	if !found {
		return RetentionRule{Checkpoints: s.cfg.Retention.Checkpoints, Source: "config"}, nil
	}
	rule.Source = "admin"
	return rule, nil
}

// SetRetention stores a retention rule that keeps the newest checkpoints committed checkpoints
// (0: all), overriding Config.Retention, and audits the change in the same transaction. It is
// applied at the next commit.
func (s *Server) SetRetention(checkpoints int, by string) (RetentionRule, error) {
	if checkpoints < 0 || checkpoints > maxRetention {
		return RetentionRule{}, fmt.Errorf("server: retention: checkpoints must be in [0, %d], got %d", maxRetention, checkpoints)
	}
	before, err := s.Retention()
	if err != nil {
		return RetentionRule{}, err
	}
	rule := RetentionRule{Checkpoints: checkpoints, Source: "admin", SetBy: by, Set: time.Now().UTC()}
	b, err := json.Marshal(rule)
	if err != nil {
		return RetentionRule{}, err
	}
	err = s.store.Update(func(tx *store.Tx) error { return tx.Put(keyRetention(s.cfg.Task.Name), b) })
	if err != nil {
		return RetentionRule{}, fmt.Errorf("server: store the retention rule: %w", err)
	}
	s.log.Info("retention rule set", "checkpoints", checkpoints, "by", by)
	if err := s.appendAudit(policy.Event{
		Time: rule.Set, Type: policy.EventPolicyChange, Principal: by, Action: "ManageRetention",
		Resource: policy.Ref{Type: "Federation", ID: s.cfg.Federation}.String(), Decision: "allow",
		Details: map[string]string{
			"change":      "retention",
			"task":        s.cfg.Task.Name,
			"checkpoints": strconv.Itoa(checkpoints),
			"before":      strconv.Itoa(before.Checkpoints),
		},
	}); err != nil {
		return RetentionRule{}, fmt.Errorf("server: audit the retention rule: %w", err)
	}
	s.signAudit()
	return rule, nil
}

// retentionCheckpoints is how many checkpoints the rule in force keeps; on a store error, the
// config's.
func (s *Server) retentionCheckpoints() int {
	rule, err := s.Retention()
	if err != nil {
		s.log.Error("retention: read the rule, using the config's", "err", err)
		return s.cfg.Retention.Checkpoints
	}
	return rule.Checkpoints
}

func (r RetentionRule) proto() *pb.Retention {
	p := &pb.Retention{Checkpoints: uint32(r.Checkpoints), Source: r.Source, SetBy: r.SetBy}
	if !r.Set.IsZero() {
		p.SetUnixNano = r.Set.UnixNano()
	}
	return p
}

// The admin RPCs. The interceptor has authorized both as ManageRetention on the Federation.

func (h *adminService) GetRetention(ctx context.Context, _ *pb.GetRetentionRequest) (*pb.Retention, error) {
	rule, err := h.s.Retention()
	if err != nil {
		return nil, h.internal("read the retention rule", err)
	}
	return rule.proto(), nil
}

func (h *adminService) SetRetention(ctx context.Context, req *pb.SetRetentionRequest) (*pb.Retention, error) {
	by, err := h.caller(ctx)
	if err != nil {
		return nil, err
	}
	if req.GetCheckpoints() > maxRetention {
		return nil, status.Errorf(codes.InvalidArgument, "checkpoints: at most %d", maxRetention)
	}
	rule, err := h.s.SetRetention(int(req.GetCheckpoints()), by.URI())
	if err != nil {
		return nil, h.internal("set the retention rule", err)
	}
	return rule.proto(), nil
}
