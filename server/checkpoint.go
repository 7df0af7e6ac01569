package server

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/fedweave/fedweave/internal/store"
)

// Keys of a task's state in the store. Round numbers are zero-padded so that keys sort by round.
func keyMeta(task string) []byte { return []byte("task/" + task + "/meta") }
func keyHead(task string) []byte { return []byte("task/" + task + "/head") }
func keyCheckpoint(task string, r uint64) []byte {
	return fmt.Appendf(nil, "task/%s/ckpt/%020d", task, r)
}
func keyRound(task string, r uint64) []byte { return fmt.Appendf(nil, "task/%s/round/%020d", task, r) }
func prefixRounds(task string) []byte       { return []byte("task/" + task + "/round/") }

// taskMeta pins what a store's task was created with.
type taskMeta struct {
	Spec       json.RawMessage `json:"spec"`
	LayoutHash string          `json:"layout_hash"`
	Created    time.Time       `json:"created"`
}

// head says where a task stands: the last committed round (0: none yet, the initial
// parameters are checkpoint 0), how many rounds are committed, and the next round number.
type head struct {
	Round     uint64 `json:"round"`
	Committed int    `json:"committed"`
	NextRound uint64 `json:"next_round"`
}

// RoundRecord is the server's record of one round: its lineage (who contributed) and figures.
// Participant identities stay on the server; partners never see them.
type RoundRecord struct {
	Round uint64 `json:"round"`
	// Parent is the checkpoint the round started from (its lineage); nil in records written
	// before it was recorded, whose parent is the previous committed round.
	Parent       *uint64  `json:"parent,omitempty"`
	Committed    bool     `json:"committed"`
	Reason       string   `json:"reason,omitempty"` // why it was aborted
	Cohort       int      `json:"cohort"`
	Participants []string `json:"participants"` // principals whose update is in the aggregate
	// Lineage holds, for each participant that sent one, its signed commitment to the dataset
	// version it trained the round on (internal/lineage); the server verified every signature
	// against the participant's certificate before recording it.
	Lineage      []LineageEntry `json:"lineage,omitempty"`
	Dropped      int            `json:"dropped"` // cohort members who did not contribute
	Refused      int            `json:"refused"` // cohort members refused for a bad message; one whose valid update was accepted before is also a participant
	EvalRecords  uint64         `json:"eval_records"`
	EvalAccuracy float64        `json:"eval_accuracy"` // clients' evaluation of the round's starting model, weighted by records
	EvalLoss     float64        `json:"eval_loss"`
	// Epsilon is, with task.dp, the task's cumulative privacy loss at Delta once this round is
	// counted (committed) or as it stood (aborted); 0 without DP. It is per record when the
	// task runs DP-SGD (dp.record), else per partner; DP holds both and what the round spent.
	Epsilon float64   `json:"epsilon,omitempty"`
	Delta   float64   `json:"delta,omitempty"`
	DP      *RoundDP  `json:"dp,omitempty"`
	Started time.Time `json:"started"`
	Seconds float64   `json:"seconds"`
}

// LineageEntry is one participant's signed commitment to its dataset version in a round: the
// signature, with the key of the participant's certificate, is of
// lineage.Message(task, round, layout hash, commitment).
type LineageEntry struct {
	Principal  string `json:"principal"`
	Commitment string `json:"commitment"` // hex HMAC-SHA-256 under the partner's secret salt (internal/lineage)
	Signature  string `json:"signature"`  // base64 Ed25519
}

// checkpoint encoding: magic "FWC1", layout hash (32 bytes), value count (uint32), then the
// parameters and the server optimizer's two moment vectors (float32, little-endian; the moments
// are empty for FedAvg and FedProx).
var ckptMagic = [4]byte{'F', 'W', 'C', '1'}

func encodeCheckpoint(hash [32]byte, params []float32, st OptState) []byte {
	n := len(params)
	withOpt := len(st.M) == n && len(st.V) == n
	var buf bytes.Buffer
	buf.Write(ckptMagic[:])
	buf.Write(hash[:])
	_ = binary.Write(&buf, binary.LittleEndian, uint32(n))
	_ = binary.Write(&buf, binary.LittleEndian, withOpt)
	_ = binary.Write(&buf, binary.LittleEndian, params)
	if withOpt {
		_ = binary.Write(&buf, binary.LittleEndian, st.M)
		_ = binary.Write(&buf, binary.LittleEndian, st.V)
	}
	return buf.Bytes()
}

var errCorrupt = errors.New("server: corrupt checkpoint")

func decodeCheckpoint(b []byte, hash [32]byte, n int) ([]float32, OptState, error) {
	const hdr = 4 + 32 + 4 + 1
	if len(b) < hdr || !bytes.Equal(b[:4], ckptMagic[:]) {
		return nil, OptState{}, errCorrupt
	}
	if !bytes.Equal(b[4:36], hash[:]) {
		return nil, OptState{}, fmt.Errorf("%w: made for another model layout", errCorrupt)
	}
	if n < 1 || int(binary.LittleEndian.Uint32(b[36:])) != n {
		return nil, OptState{}, fmt.Errorf("%w: wrong parameter count", errCorrupt)
	}
	if b[40] > 1 {
		return nil, OptState{}, fmt.Errorf("%w: bad optimizer-state flag", errCorrupt)
	}
	withOpt := b[40] == 1
	vectors := 1
	if withOpt {
		vectors = 3
	}
	if len(b) != hdr+4*n*vectors {
		return nil, OptState{}, fmt.Errorf("%w: wrong length", errCorrupt)
	}
	read := func(off int) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[off+4*i:]))
		}
		return v
	}
	params := read(hdr)
	var st OptState
	if withOpt {
		st.M, st.V = read(hdr+4*n), read(hdr+8*n)
	}
	return params, st, nil
}

// loadJSON reads a JSON value; found is false when the key is absent.
func loadJSON(s *store.Store, key []byte, v any) (found bool, err error) {
	b, err := s.Get(key)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return true, json.Unmarshal(b, v)
}
