package client

import (
	"strings"
	"testing"

	pb "github.com/fedweave/fedweave/api/fedweave/v1"
)

// cohortAgg is a protocol client whose server-side view of the cohort is cohort.
type cohortAgg struct{ cohort int }

func (a cohortAgg) Phase(int, []byte) ([]byte, error) { return []byte("masked input"), nil }
func (a cohortAgg) Cohort() int                       { return a.cohort }

// TestPhaseRefusesOtherCohort: when the protocol runs another cohort than the round announced
// (the cohort the privacy charge was computed from), the client refuses the round before it
// sends the phase's message (the round has no stream: a send would panic).
func TestPhaseRefusesOtherCohort(t *testing.T) {
	r := &round{agg: cohortAgg{cohort: 5}, cur: &pb.RoundStart{Round: 3, CohortSize: 4}}
	err := r.phase(&pb.PhaseMessage{Round: 3, Phase: 1, Index: 0, Total: 1, Data: []byte("neighbours")})
	if err == nil || !strings.Contains(err.Error(), "announced a cohort of 4, its secure aggregation runs 5") {
		t.Fatalf("phase: %v", err)
	}
}
