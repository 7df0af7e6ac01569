package client

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sync"

	pb "github.com/fedweave/fedweave/api/fedweave/v1"
	"github.com/fedweave/fedweave/crypto/agg"
	"github.com/fedweave/fedweave/crypto/mhe"
)

// Threshold homomorphic aggregation ("mhe", crypto/mhe) on the client's side.
//
// Under mhe the server first runs a key set-up: a RoundStart without parameters (ParamChunks
// 0) whose protocol settings say {"setup": true, "config": ...}, then the set-up's phases.
// The client answers them with an mhe.SetupMember (its cohort index is its member number) and
// keeps the KeyMaterial it ends with. Each round's settings then name the key set and map the
// cohort to the set-up's members, and the client encrypts its update under the collective key
// and, when asked, sends its decryption share.
//
// The KeyMaterial is kept in memory and, when the client has an encrypted Store, persisted in it
// (sealed under the store's own key, as the secret "mhe/<key set id>"), so that a restarted
// client resumes the rounds of its key set. Without a Store a restarted client has lost it and
// cannot take part in that key set's rounds (it says so and reconnects) until the server runs a
// new set-up, which it does when fewer than max(threshold, min_clients) of the set's members
// are connected.

// mheKeys holds the key material of the key sets this client took part in, by set-up ID, and
// persists it in the client's store when there is one.
type mheKeys struct {
	mu    sync.Mutex
	sets  map[[32]byte]*mhe.KeyMaterial
	store *Store // nil: memory only
}

func mheSecretName(id [32]byte) string { return "mhe/" + hex.EncodeToString(id[:]) }

func (k *mheKeys) keep(km *mhe.KeyMaterial) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.sets == nil {
		k.sets = map[[32]byte]*mhe.KeyMaterial{}
	}
	id := km.Public().ID()
	k.sets[id] = km
	if k.store == nil {
		return nil
	}
	b, err := km.MarshalBinary()
	if err != nil {
		return err
	}
	return k.store.PutSecret(mheSecretName(id), b)
}

func (k *mheKeys) get(id [32]byte) *mhe.KeyMaterial {
	k.mu.Lock()
	defer k.mu.Unlock()
	if km := k.sets[id]; km != nil || k.store == nil {
		return km
	}
	b, err := k.store.Secret(mheSecretName(id))
	if err != nil {
		return nil
	}
	km, err := mhe.UnmarshalKeyMaterial(b)
	if err != nil || km.Public().ID() != id {
		return nil
	}
	if k.sets == nil {
		k.sets = map[[32]byte]*mhe.KeyMaterial{}
	}
	k.sets[id] = km
	return km
}

// isMHESetup reports whether s opens a key set-up rather than a round.
func (r *round) isMHESetup(s *pb.RoundStart) bool {
	return r.secure == "mhe" && s.GetParamChunks() == 0
}

// startSetup takes part in a key set-up: phase 0 at once, later phases through round.phase.
func (r *round) startSetup(s *pb.RoundStart) error {
	var st mhe.Settings
	if err := json.Unmarshal(s.GetProtocol(), &st); err != nil || !st.Setup || st.Config == nil {
		return fmt.Errorf("client: round %d announces no parameters and no mhe key set-up", s.GetRound())
	}
	c := st.Config
	if c.Task != r.c.cfg.Task {
		return fmt.Errorf("client: an mhe key set-up for task %q, this client takes part in %q", c.Task, r.c.cfg.Task)
	}
	m, err := mhe.NewSetupMember(*c, int(s.GetIndex()))
	if err != nil {
		return fmt.Errorf("client: mhe key set-up: %w", err)
	}
	r.cur, r.buf, r.chunks, r.phaseB, r.phaseN = s, r.buf[:0], 0, nil, 0
	r.agg = &setupMember{m: m, keys: &r.c.mhe}
	out, err := r.agg.Phase(0, nil)
	if err != nil {
		return fmt.Errorf("client: mhe key set-up: %w", err)
	}
	r.c.log.Info("mhe key set-up", "epoch", c.Epoch, "member", s.GetIndex(), "members", c.Members, "threshold", c.Threshold)
	return sendChunked(r.stream, s.GetRound(), 0, out)
}

// setupMember keeps the member's key material once its last phase is done.
type setupMember struct {
	m    *mhe.SetupMember
	keys *mheKeys
}

func (s *setupMember) Phase(p int, fromServer []byte) ([]byte, error) {
	out, err := s.m.Phase(p, fromServer)
	if err != nil {
		return nil, err
	}
	if km, err := s.m.KeyMaterial(); err == nil {
		if err := s.keys.keep(km); err != nil {
			return nil, fmt.Errorf("client: keep the mhe key material: %w", err)
		}
	}
	return out, nil
}

// mheProtocol returns the client's side of an mhe round from its settings.
func (c *Client) mheProtocol(settings []byte) (agg.Protocol, error) {
	var st mhe.Settings
	if err := json.Unmarshal(settings, &st); err != nil {
		return nil, fmt.Errorf("client: the round's mhe settings: %w", err)
	}
	raw, err := hex.DecodeString(st.KeySet)
	if err != nil || len(raw) != 32 {
		return nil, fmt.Errorf("client: the round's mhe settings name no key set")
	}
	km := c.mhe.get([32]byte(raw))
	if km == nil {
		return nil, fmt.Errorf("client: no key material for the round's mhe key set %.12s: this client was not in its set-up, or restarted since (key material is kept in memory)", st.KeySet)
	}
	return mhe.New(mhe.Config{Quant: st.Quant, Cohort: st.Cohort}, km), nil
}
