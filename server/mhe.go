package server

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/fedweave/fedweave/api/fedweave/v1"
	"github.com/fedweave/fedweave/crypto/agg"
	"github.com/fedweave/fedweave/crypto/mhe"
	"github.com/fedweave/fedweave/crypto/quant"
	"github.com/fedweave/fedweave/internal/store"
)

// Threshold homomorphic aggregation ("mhe", crypto/mhe) in the task's rounds.
//
// A task under mhe runs one key set-up before its first round, over the same Participate
// streams as its rounds: a RoundStart with no parameters to train (ParamChunks 0) and
// protocol settings {"setup": true, "config": ...}, then the three phases of
// mhe.SetupServer / mhe.SetupMember as PhaseMessages, then a RoundEnd. Its round number is
// SetupRoundBase + the set-up's epoch, never a training round's: a set-up is not a round, it
// does not count towards the task's rounds, it commits no checkpoint and writes no round
// record (it is logged). The set-up's members are the clients connected at the time, in the
// order of their principals (cohort index i is set-up member i); the server keeps the
// PublicSetup and the principal of each member in its store (task/<task>/mhe/setup), each
// member its mhe.KeyMaterial.
//
// Each round then sends the settings {"quant", "key_set", "cohort"}: the set-up's ID, and for
// every cohort position the set-up member it stands for, from which each client builds
// mhe.New(mhe.Config{Quant, Cohort}, its KeyMaterial). Only the set-up's members take part.
// A new set-up (the next epoch) runs when fewer than max(threshold, min_clients) of its
// members are connected, when the config's mhe section changes, or when a set-up fails.

// SetupRoundBase is added to a key set-up's epoch to give the set-up's round number, which no
// training round reaches.
const SetupRoundBase = uint64(1) << 62

// MHEConfig is a task's choice of threshold homomorphic aggregation (`mhe:` in the config).
type MHEConfig struct {
	// Threshold is the number of set-up members that must help decrypt each round's sum. 0: a
	// strict majority of the set-up's members, but at most min_clients. It may not exceed
	// min_clients: a round that meets min_clients must be able to decrypt.
	Threshold int `json:"threshold,omitempty"`
	// MaxWeight bounds a client's weight (its training records) in every round; with the
	// members and quant.bits it sizes the plaintext modulus. 0: the larger of 2^16/members and
	// twice the most records a member declared at set-up time. A client that declares more
	// is left out of the rounds with an error that says so.
	MaxWeight uint64 `json:"max_weight,omitempty"`
	// Quant is how updates are quantized (bits, clip), as for secagg.
	Quant quant.Config `json:"quant,omitempty"`
}

func (c MHEConfig) validate(minClients int) error {
	if c.Threshold < 0 || c.Threshold > mhe.MaxMembers {
		return fmt.Errorf("mhe.threshold: %d is outside [0, %d]", c.Threshold, mhe.MaxMembers)
	}
	if c.Threshold > minClients {
		return fmt.Errorf("mhe.threshold: %d exceeds min_clients %d; a round that meets min_clients must be able to decrypt", c.Threshold, minClients)
	}
	if c.MaxWeight > 1<<40 {
		return fmt.Errorf("mhe.max_weight: %d exceeds 2^40", c.MaxWeight)
	}
	if err := c.Quant.Validate(); err != nil {
		return fmt.Errorf("mhe.quant: %w", err)
	}
	return nil
}

// mheState is the task's current key set (nil pub: none yet).
type mheState struct {
	loaded  bool
	pub     *mhe.PublicSetup
	members map[string]int // principal URI -> set-up member
	epoch   uint32         // the last epoch tried
}

// mheRecord is what the store keeps of a set-up.
type mheRecord struct {
	Setup   []byte         `json:"setup"` // mhe.PublicSetup.MarshalBinary
	Members map[string]int `json:"members"`
	Created time.Time      `json:"created"`
}

func keyMHESetup(task string) []byte { return []byte("task/" + task + "/mhe/setup") }
func keyMHEEpoch(task string) []byte { return []byte("task/" + task + "/mhe/epoch") }

// loadMHE reads the persisted set-up once.
func (s *Server) loadMHE() error {
	if s.mhe == nil {
		s.mhe = &mheState{}
	}
	st := s.mhe
	if st.loaded {
		return nil
	}
	task := s.cfg.Task.Name
	var epoch uint32
	if _, err := loadJSON(s.store, keyMHEEpoch(task), &epoch); err != nil {
		return fmt.Errorf("server: read mhe epoch: %w", err)
	}
	st.epoch = epoch
	var rec mheRecord
	found, err := loadJSON(s.store, keyMHESetup(task), &rec)
	if err != nil {
		return fmt.Errorf("server: read mhe set-up: %w", err)
	}
	if found {
		pub, err := mhe.UnmarshalPublicSetup(rec.Setup)
		if err != nil {
			return fmt.Errorf("server: mhe set-up in the store: %w", err)
		}
		st.pub, st.members = pub, rec.Members
		s.log.Info("mhe key set resumed", "key_set", shortID(pub.ID()), "members", len(rec.Members), "threshold", pub.Threshold())
	}
	st.loaded = true
	return nil
}

func shortID(id [32]byte) string { return hex.EncodeToString(id[:6]) }

// mheThreshold is the threshold of a set-up of n members.
func (s *Server) mheThreshold(n int) int {
	t := &s.cfg.Task
	if t.MHE.Threshold > 0 {
		return t.MHE.Threshold
	}
	return max(1, min(n/2+1, t.MinClients))
}

// mheCohort returns the round's cohort under mhe: the members of the task's key set among
// cohort. It first runs a key set-up when there is none, when the config changed, or when
// fewer than max(threshold, min_clients) of the set-up's members are connected. Other
// protections get cohort back.
func (s *Server) mheCohort(ctx context.Context, cohort []*session) ([]*session, error) {
	t := &s.cfg.Task
	if t.Secure != "mhe" {
		return cohort, nil
	}
	for failures := 0; ; {
		if err := s.loadMHE(); err != nil {
			return nil, err
		}
		if st := s.mhe; st.pub != nil {
			cfg := st.pub.Config()
			switch {
			case cfg.Task != t.Name || cfg.Bits != quantBits(t.MHE.Quant) ||
				(t.MHE.Threshold > 0 && cfg.Threshold != t.MHE.Threshold) ||
				(t.MHE.MaxWeight > 0 && cfg.MaxWeight != t.MHE.MaxWeight):
				s.log.Info("mhe: the config's mhe section changed; new key set-up")
			default:
				in := s.mheMembersOf(cohort, cfg.MaxWeight)
				if len(in) >= max(cfg.Threshold, t.MinClients) {
					return in, nil
				}
				s.log.Info("mhe: too few of the key set's members are connected; new key set-up",
					"connected_members", len(in), "threshold", cfg.Threshold, "min_clients", t.MinClients)
			}
		}
		ok, err := s.runSetup(ctx, s.liveSessions())
		if err != nil {
			return nil, err
		}
		if !ok {
			if failures++; failures >= 5 {
				return nil, fmt.Errorf("server: mhe: %d key set-ups failed in a row: giving up", failures)
			}
		}
		if cohort, err = s.waitForCohort(ctx); err != nil {
			return nil, err
		}
	}
}

func quantBits(q quant.Config) int {
	if q.Bits == 0 {
		return quant.DefaultBits
	}
	return q.Bits
}

// mheMembersOf returns the sessions of cohort that are members of the key set and whose
// declared records fit its maximum weight; the others are told why they are left out.
func (s *Server) mheMembersOf(cohort []*session, maxWeight uint64) []*session {
	s.mu.Lock()
	defer s.mu.Unlock()
	var in []*session
	for _, ss := range cohort {
		if _, ok := s.mhe.members[ss.key]; !ok {
			continue
		}
		if w := s.joined[ss.key]; w > maxWeight {
			reason := fmt.Sprintf("mhe: this client declared %d training records, more than the key set's max_weight of %d: it cannot take part (raise mhe.max_weight, which runs a new key set-up)", w, maxWeight)
			s.log.Warn("client left out", "client", ss.key, "reason", reason)
			ss.fail(status.Error(codes.FailedPrecondition, reason))
			continue
		}
		in = append(in, ss)
	}
	return in
}

// liveSessions returns the connected, authorized clients, in the order of their principals.
func (s *Server) liveSessions() []*session {
	s.mu.Lock()
	var live []*session
	for _, ss := range s.sessions {
		if ss.alive() {
			live = append(live, ss)
		}
	}
	s.mu.Unlock()
	live = s.stillAuthorized(live)
	slices.SortFunc(live, func(a, b *session) int { return strings.Compare(a.key, b.key) })
	return live
}

// roundProtocol returns the protocol of a round with cohort, and its settings for the clients.
func (s *Server) roundProtocol(cohort []*session) (agg.Protocol, []byte, error) {
	t := &s.cfg.Task
	if t.Secure != "mhe" {
		return s.proto, s.protoSettings, nil
	}
	st := s.mhe
	if st == nil || st.pub == nil {
		return nil, nil, errors.New("mhe: no key set")
	}
	idx := make([]int, len(cohort))
	for i, ss := range cohort {
		m, ok := st.members[ss.key]
		if !ok {
			return nil, nil, fmt.Errorf("mhe: %s is not a member of the key set", ss.key)
		}
		idx[i] = m
	}
	id := st.pub.ID()
	settings, err := json.Marshal(mhe.Settings{Quant: t.MHE.Quant, KeySet: hex.EncodeToString(id[:]), Cohort: idx})
	if err != nil {
		return nil, nil, err
	}
	return mhe.New(mhe.Config{Quant: t.MHE.Quant, Cohort: idx}, st.pub), settings, nil
}

// setupServer adapts mhe.SetupServer to agg.Server, for collect.
type setupServer struct{ *mhe.SetupServer }

func (setupServer) Result() (agg.Sum, error) { return agg.Sum{}, nil }

// runSetup runs a key set-up with the clients live. ok reports whether it succeeded; err is
// for what ends the task (ctx, the store).
func (s *Server) runSetup(ctx context.Context, live []*session) (ok bool, err error) {
	t := &s.cfg.Task
	st := s.mhe
	n := min(len(live), mhe.MaxMembers)
	live = live[:n]
	epoch := st.epoch + 1
	if err := s.store.Update(func(tx *store.Tx) error {
		b, _ := json.Marshal(epoch)
		return tx.Put(keyMHEEpoch(t.Name), b)
	}); err != nil {
		return false, fmt.Errorf("server: mhe epoch: %w", err)
	}
	st.epoch = epoch
	maxWeight := t.MHE.MaxWeight
	if maxWeight == 0 {
		var declared uint64
		s.mu.Lock()
		for _, ss := range live {
			declared = max(declared, s.joined[ss.key])
		}
		s.mu.Unlock()
		maxWeight = min(max(uint64(1<<16)/uint64(max(n, 1)), 2*declared), 1<<40)
	}
	cfg := mhe.SetupConfig{Task: t.Name, Epoch: epoch, Members: n, Threshold: s.mheThreshold(n), MaxWeight: maxWeight, Bits: quantBits(t.MHE.Quant)}
	start := time.Now()
	r := SetupRoundBase + uint64(epoch)
	s.log.Info("mhe key set-up start", "epoch", epoch, "members", n, "threshold", cfg.Threshold, "max_weight", maxWeight)
	srv, err := mhe.NewSetupServer(cfg)
	if err != nil {
		s.log.Warn("mhe key set-up refused", "epoch", epoch, "err", err)
		return false, nil
	}
	settings, err := json.Marshal(mhe.Settings{Setup: true, Quant: t.MHE.Quant, Config: &cfg})
	if err != nil {
		return false, err
	}
	s.mu.Lock()
	numParams := len(s.params)
	s.mu.Unlock()
	members := make(map[*session]*member, n)
	byIndex := make(map[int]*member, n)
	for i, ss := range live {
		m := &member{s: ss, index: i + 1}
		members[ss], byIndex[m.index] = m, m
		if !ss.send(&pb.ServerMessage{Body: &pb.ServerMessage_Start{Start: &pb.RoundStart{
			Round: r, Config: &pb.RoundConfig{}, LayoutHash: s.hash, NumParams: uint64(numParams), ParamChunks: 0,
			Index: uint32(m.index), CohortSize: uint32(n), DeadlineMs: uint64(t.PhaseTimeout.Milliseconds()), Protocol: settings,
		}}}) {
			m.out = true
		}
	}
	// A member's largest message is its sealed shares for every other member.
	maxMsg := (n+1)*(80<<10) + ChunkSize
	reason := ""
	for phase := 0; ; phase++ {
		if err := s.collect(ctx, r, phase, members, setupServer{srv}, t.PhaseTimeout.Duration, maxMsg); err != nil {
			return false, err
		}
		next, done, err := srv.Next()
		if err != nil {
			reason = err.Error()
			break
		}
		if done {
			break
		}
		for _, m := range members {
			m.answered = true
		}
		for idx, msg := range next {
			m := byIndex[idx]
			if m == nil || m.out {
				continue
			}
			m.answered = false
			if !m.s.sendChunked(r, phase+1, msg) {
				m.out = true
			}
		}
	}
	var pub *mhe.PublicSetup
	if reason == "" {
		if pub, err = srv.PublicSetup(); err != nil {
			reason = err.Error()
		}
	}
	if reason == "" {
		rec := mheRecord{Members: map[string]int{}, Created: time.Now().UTC()}
		for _, idx := range pub.Members() {
			rec.Members[byIndex[idx].s.key] = idx
		}
		if rec.Setup, err = pub.MarshalBinary(); err != nil {
			return false, err
		}
		b, _ := json.Marshal(rec)
		if err := s.store.Update(func(tx *store.Tx) error { return tx.Put(keyMHESetup(t.Name), b) }); err != nil {
			return false, fmt.Errorf("server: store mhe set-up: %w", err)
		}
		st.pub, st.members = pub, rec.Members
	}
	end := &pb.RoundEnd{Round: r, Committed: reason == ""}
	if pub != nil && reason == "" {
		end.Participants = uint32(len(pub.Members()))
	} else {
		end.Reason = "mhe key set-up failed; it will run again"
	}
	for _, m := range members {
		if !m.out {
			m.s.send(&pb.ServerMessage{Body: &pb.ServerMessage_End{End: end}})
		}
	}
	if reason != "" {
		s.log.Warn("mhe key set-up failed", "epoch", epoch, "reason", reason, "seconds", time.Since(start).Seconds())
		return false, nil
	}
	id := pub.ID()
	s.log.Info("mhe key set-up done", "epoch", epoch, "key_set", shortID(id), "members", len(pub.Members()),
		"threshold", pub.Threshold(), "plaintext_modulus", pub.PlaintextModulus(), "seconds", time.Since(start).Seconds())
	return true, nil
}
