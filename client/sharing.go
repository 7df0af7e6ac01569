package client

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
	"strings"

	"sigs.k8s.io/yaml"

	pb "github.com/fedweave/fedweave/api/fedweave/v1"
	"github.com/fedweave/fedweave/crypto/agg"
	"github.com/fedweave/fedweave/crypto/dp"
	"github.com/fedweave/fedweave/dataset"
	"github.com/fedweave/fedweave/models"
)

// A SharingPolicy is the partner's own rule for what its records may be used for, kept in a
// local file the partner controls, whatever the server's policies say. The client enforces it
// before anything leaves:
//
//   - Federations and Tasks: the client does not contact a server of another federation (its
//     certificate's) or for another task (Config.Task) at all;
//   - Purposes: the client asks the server for the task's terms (DescribeTask) before it
//     joins, and does not join a task whose purpose is not listed; it checks the terms again
//     in the server's answer to Join, before it opens the round channel;
//   - Modalities: the client removes the other modalities from its records before it trains
//     (records left with none are dropped), does not declare them when it joins, and sends,
//     for the parameter groups of their encoders, zero change and zero weight.
//
// A nil list allows everything of its kind; an empty list allows nothing. Names are compared
// exactly; modalities are text, image and tabular.
type SharingPolicy struct {
	Federations []string `json:"federations,omitempty"`
	Tasks       []string `json:"tasks,omitempty"`
	Modalities  []string `json:"modalities,omitempty"`
	Purposes    []string `json:"purposes,omitempty"`
	// MaxEpsilon is the partner's own privacy budget, at Delta, in each unit (per record, per
	// partner) over every task its privacy ledger counts: the client stops contributing (Run
	// ends with ErrNotShared) at a round whose update would take the ledger past it, or that
	// has no differential privacy at all. 0: no limit.
	MaxEpsilon float64 `json:"max_epsilon,omitempty"`
	Delta      float64 `json:"delta,omitempty"` // 0 means 1e-5
}

// ErrNotShared is matched by the error of Run when the local sharing policy does not allow
// taking part: another federation, task or purpose, or no record left to share. Nothing about
// the records was sent.
var ErrNotShared = errors.New("client: not allowed by the local sharing policy")

// LoadSharingPolicy reads a sharing policy file, YAML or JSON, such as
//
//	federations: [acme]
//	tasks: [triage]
//	modalities: [text, tabular]   # no images leave this site
//	purposes: [research]
//
// Unknown fields and unknown modalities are errors.
func LoadSharingPolicy(path string) (*SharingPolicy, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("client: sharing policy: %w", err)
	}
	var p SharingPolicy
	if err := yaml.UnmarshalStrict(b, &p); err != nil {
		return nil, fmt.Errorf("client: sharing policy %s: %w", path, err)
	}
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("client: sharing policy %s: %w", path, err)
	}
	return &p, nil
}

// Validate reports a modality fedweave does not know.
func (p *SharingPolicy) Validate() error {
	if !(p.MaxEpsilon >= 0) || math.IsInf(p.MaxEpsilon, 0) {
		return fmt.Errorf("max_epsilon: %v, want 0 (none) or a positive number", p.MaxEpsilon)
	}
	if !(p.Delta >= 0 && p.Delta < 1) {
		return fmt.Errorf("delta: %v, want 0 (1e-5) or a number between 0 and 1", p.Delta)
	}
	for _, m := range p.Modalities {
		if _, err := dataset.ParseModality(m); err != nil || m != strings.ToLower(strings.TrimSpace(m)) {
			return fmt.Errorf("modalities: unknown modality %q (want text, image or tabular)", m)
		}
	}
	return nil
}

// budget returns the policy's max_epsilon (0: none) and the delta it is counted at.
func (p *SharingPolicy) budget() (float64, float64) {
	if p == nil {
		return 0, p.delta()
	}
	return p.MaxEpsilon, p.delta()
}

// delta is the delta the budget is counted at.
func (p *SharingPolicy) delta() float64 {
	if p == nil || p.Delta == 0 {
		return dp.DefaultDelta
	}
	return p.Delta
}

func allows(list []string, name string) bool { return list == nil || slices.Contains(list, name) }

// AllowsFederation reports whether p allows taking part in the federation; a nil p allows
// everything, as do the other Allows methods.
func (p *SharingPolicy) AllowsFederation(name string) bool {
	return p == nil || allows(p.Federations, name)
}

// AllowsTask reports whether p allows taking part in the task.
func (p *SharingPolicy) AllowsTask(name string) bool {
	return p == nil || allows(p.Tasks, name)
}

// AllowsPurpose reports whether p allows training for the purpose.
func (p *SharingPolicy) AllowsPurpose(name string) bool {
	return p == nil || allows(p.Purposes, name)
}

// AllowsModality reports whether the modality may contribute.
func (p *SharingPolicy) AllowsModality(m dataset.Modality) bool {
	return p == nil || allows(p.Modalities, m.String())
}

// Availability returns the modalities p allows.
func (p *SharingPolicy) Availability() dataset.Availability {
	var a dataset.Availability
	for _, m := range dataset.Modalities {
		a[m] = p.AllowsModality(m)
	}
	return a
}

// Strip returns d with every modality p does not allow removed from every record; records left
// with no modality are dropped. d is not changed.
func (p *SharingPolicy) Strip(d *dataset.Dataset) *dataset.Dataset {
	if p == nil || p.Modalities == nil {
		return d
	}
	return dataset.ApplyAvailability(d, p.Availability())
}

// checkTask refuses a federation or task p does not allow.
func (p *SharingPolicy) checkTask(federation, task string) error {
	switch {
	case !p.AllowsFederation(federation):
		return fmt.Errorf("%w: federation %q is not in its federations", ErrNotShared, federation)
	case !p.AllowsTask(task):
		return fmt.Errorf("%w: task %q is not in its tasks", ErrNotShared, task)
	}
	return nil
}

// checkTerms refuses a task whose terms p does not allow.
func (p *SharingPolicy) checkTerms(federation, task, purpose string) error {
	if err := p.checkTask(federation, task); err != nil {
		return err
	}
	if !p.AllowsPurpose(purpose) {
		return fmt.Errorf("%w: task %q trains for %q, which is not in its purposes", ErrNotShared, task, purpose)
	}
	return nil
}

// modalityGroups maps each modality to the parameter group of its encoder.
var modalityGroups = [dataset.NumModalities]int{
	dataset.Text: models.GroupText, dataset.Image: models.GroupImage, dataset.Tabular: models.GroupTabular,
}

// sharingProtocol wraps the task's aggregation protocol so that a client's input carries zero
// change and zero weight for the encoders of the modalities it does not share, whatever local
// training did: the last step before the update is protected and sent.
type sharingProtocol struct {
	agg.Protocol
	withheld [models.NumGroups]bool
}

// protect returns proto, wrapped when p withholds a modality.
func (p *SharingPolicy) protect(proto agg.Protocol) agg.Protocol {
	sp := sharingProtocol{Protocol: proto}
	some := false
	for _, m := range dataset.Modalities {
		if !p.AllowsModality(m) {
			sp.withheld[modalityGroups[m]] = true
			some = true
		}
	}
	if !some {
		return proto
	}
	return sp
}

func (sp sharingProtocol) NewClient(p agg.Params, index int, in agg.Input) (agg.Client, error) {
	if len(p.Groups) != len(in.Values) {
		return nil, fmt.Errorf("client: %d values for %d group indices", len(in.Values), len(p.Groups))
	}
	values, weights := slices.Clone(in.Values), slices.Clone(in.Weights)
	for i, g := range p.Groups {
		if int(g) < len(sp.withheld) && sp.withheld[g] {
			values[i] = 0
		}
	}
	for g := range weights {
		if g < len(sp.withheld) && sp.withheld[g] {
			weights[g] = 0
		}
	}
	return sp.Protocol.NewClient(p, index, agg.Input{Values: values, Weights: weights})
}

// checkTerms asks the server for the task's terms and refuses them if the sharing policy does
// not allow them, before the client joins (and so before it declares anything about its
// records). Without a sharing policy there is nothing to check.
func (c *Client) checkTerms(ctx context.Context, api pb.FederationClient) error {
	if c.cfg.Sharing == nil {
		return nil
	}
	info, err := api.DescribeTask(ctx, &pb.DescribeTaskRequest{Task: c.cfg.Task})
	if err != nil {
		return err
	}
	return c.cfg.Sharing.checkTerms(info.GetFederation(), info.GetTask(), info.GetPurpose())
}
