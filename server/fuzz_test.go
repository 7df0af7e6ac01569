package server

import (
	"bytes"
	"encoding/binary"
	"errors"
	"log/slog"
	"math"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/fedweave/fedweave/api/fedweave/v1"
	"github.com/fedweave/fedweave/crypto/agg"
	"github.com/fedweave/fedweave/crypto/pki"
)

// FuzzDecodeCheckpoint: decodeCheckpoint never panics, refuses with errCorrupt, and a checkpoint
// it accepts is exactly what encodeCheckpoint writes for the values it returned.
func FuzzDecodeCheckpoint(f *testing.F) {
	var hash [32]byte
	for i := range hash {
		hash[i] = byte(i * 7)
	}
	f.Add(encodeCheckpoint(hash, []float32{1, -2, 3.5}, OptState{}), uint16(3), false)
	f.Add(encodeCheckpoint(hash, []float32{1, 2}, OptState{M: []float32{0.1, 0.2}, V: []float32{0.3, 0.4}}), uint16(2), false)
	f.Add(encodeCheckpoint(hash, []float32{float32(math.NaN())}, OptState{}), uint16(1), true)
	f.Add([]byte("FWC1"), uint16(0), false)
	f.Add([]byte{}, uint16(0), true)
	f.Fuzz(func(t *testing.T, b []byte, n uint16, fromHeader bool) {
		h, count := hash, int(n)
		if fromHeader && len(b) >= 40 {
			// Take the hash and the count the checkpoint claims, so that the fuzzer gets past
			// the header checks.
			copy(h[:], b[4:36])
			count = int(binary.LittleEndian.Uint32(b[36:]))
		}
		params, st, err := decodeCheckpoint(b, h, count)
		if err != nil {
			if !errors.Is(err, errCorrupt) {
				t.Fatalf("error %v does not match errCorrupt", err)
			}
			return
		}
		if len(params) != count {
			t.Fatalf("%d parameters decoded, want %d", len(params), count)
		}
		if (st.M != nil || st.V != nil) && (len(st.M) != count || len(st.V) != count) {
			t.Fatalf("optimizer state of %d and %d values for %d parameters", len(st.M), len(st.V), count)
		}
		if again := encodeCheckpoint(h, params, st); !bytes.Equal(again, b) {
			t.Fatalf("accepted checkpoint re-encodes differently:\n got %x\nwant %x", again, b)
		}
	})
}

// recordingAgg wraps the round's aggregation server to check what handle hands it.
type recordingAgg struct {
	agg.Server
	t        *testing.T
	byIndex  map[int]*member
	maxMsg   int
	received map[int]int // calls, by member
	accepted int
}

func (r *recordingAgg) Receive(from int, msg []byte) error {
	m := r.byIndex[from]
	if m == nil {
		r.t.Fatalf("Receive from %d, not a cohort member", from)
	}
	if m.refused {
		r.t.Fatalf("Receive from member %d after it was refused", from)
	}
	if len(msg) > r.maxMsg {
		r.t.Fatalf("Receive of %d bytes, the round allows %d", len(msg), r.maxMsg)
	}
	r.received[from]++
	if r.received[from] > 1 {
		r.t.Fatalf("member %d handed over %d messages in one phase", from, r.received[from])
	}
	err := r.Server.Receive(from, msg)
	if err == nil {
		r.accepted++
	}
	return err
}

// FuzzHandlePhase drives handle, the server's check of one client message, with sequences of
// messages from two cohort members and one outsider, as the single-phase plaintext round sees
// them. Whatever arrives: no panic; every stream the server ends carries InvalidArgument or
// FailedPrecondition; a member's message reaches the aggregation at most once, never after the
// member was refused and never above the round's size bound; no member buffers more than that
// bound; and what is aggregated is finite.
func FuzzHandlePhase(f *testing.F) {
	const round = 5
	p := agg.Params{Round: round, NumValues: 3, NumGroups: 2, Groups: []uint8{0, 1, 1}}
	valid := agg.EncodePlain(p, agg.Input{Values: []float32{1, -1, 0.5}, Weights: []float64{2, 1}})
	// One op is 8 bytes: kind, sender, round offset, phase, index, total, data offset, data length.
	f.Add([]byte{3, 0, 0, 0, 0, 1, 0, 0})                         // a valid update
	f.Add([]byte{3, 0, 0, 0, 0, 1, 0, 0, 3, 0, 0, 0, 0, 1, 0, 0}) // twice
	f.Add([]byte{0, 1, 0, 0, 0, 2, 0, 40, 0, 1, 0, 0, 1, 2, 40, 60})
	f.Add([]byte{1, 0, 0, 0, 0, 0, 2, 0, 2, 1, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{0, 2, 255, 1, 0, 0, 0, 0})
	s := &Server{log: slog.New(slog.DiscardHandler), metrics: newMetrics()} // handle only counts in metrics
	f.Fuzz(func(t *testing.T, ops []byte) {
		srv, err := agg.Plain{}.NewServer(p, 2)
		if err != nil {
			t.Fatal(err)
		}
		var sessions [3]*session
		for i := range sessions {
			sessions[i] = newSession(pki.Principal{Federation: "f", Org: string(rune('a' + i)), Role: pki.RoleClient, Name: "n"})
		}
		members := map[*session]*member{}
		byIndex := map[int]*member{}
		for i := range 2 { // sessions[2] is not in the cohort
			m := &member{s: sessions[i], index: i + 1}
			members[sessions[i]], byIndex[m.index] = m, m
		}
		maxMsg := len(valid) + 64
		rec := &recordingAgg{Server: srv, t: t, byIndex: byIndex, maxMsg: maxMsg, received: map[int]int{}}
		for len(ops) >= 8 {
			op := ops[:8]
			ops = ops[8:]
			from := sessions[int(op[1])%len(sessions)]
			r := uint64(round + int64(int8(op[2])))
			var msg *pb.ClientMessage
			switch op[0] % 4 {
			case 0, 3: // a chunk of a phase message: a slice of a valid update, or all of it
				data := valid
				if op[0]%4 == 0 {
					lo := min(int(op[6]), len(valid))
					data = valid[lo:min(lo+int(op[7])*4, len(valid))]
				}
				msg = &pb.ClientMessage{Body: &pb.ClientMessage_Phase{Phase: &pb.PhaseMessage{
					Round: r, Phase: uint32(op[3] % 3), Index: uint32(op[4] % 4), Total: uint32(op[5] % 4), Data: data,
				}}}
			case 1:
				odd := []float64{0, 0.5, 1, 2, -1, math.NaN(), math.Inf(1), math.Inf(-1)}
				msg = &pb.ClientMessage{Body: &pb.ClientMessage_Eval{Eval: &pb.EvalReport{
					Round: r, Records: uint64(op[4]), Accuracy: odd[op[5]%8], Loss: odd[op[6]%8],
				}}}
			case 2:
				msg = &pb.ClientMessage{Body: &pb.ClientMessage_Hello{Hello: &pb.Hello{Task: "t"}}}
			}
			s.handle(inbound{s: from, msg: msg}, round, 0, members, rec, maxMsg)
			for _, m := range members {
				if len(m.buf) > maxMsg {
					t.Fatalf("member %d buffers %d bytes, the round allows %d", m.index, len(m.buf), maxMsg)
				}
			}
		}
		for i, ss := range sessions {
			if ss.alive() {
				continue
			}
			if c := status.Code(ss.err()); c != codes.InvalidArgument && c != codes.FailedPrecondition {
				t.Errorf("session %d ended with %v", i, ss.err())
			}
			if m := members[ss]; m != nil && !m.refused {
				t.Errorf("session %d ended but its member is not marked refused", i)
			}
		}
		if _, done, err := srv.Next(); err != nil || !done {
			return // nothing arrived
		}
		sum, err := srv.Result()
		if err != nil {
			t.Fatal(err)
		}
		if len(sum.Contributors) != rec.accepted {
			t.Fatalf("contributors %v, but %d messages were accepted", sum.Contributors, rec.accepted)
		}
		for _, v := range sum.Values {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				t.Fatalf("aggregate holds %v", v)
			}
		}
	})
}
