package server_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	pb "github.com/fedweave/fedweave/api/fedweave/v1"
	"github.com/fedweave/fedweave/crypto/agg"
	"github.com/fedweave/fedweave/crypto/pki"
	"github.com/fedweave/fedweave/dataset"
	"github.com/fedweave/fedweave/internal/lineage"
	"github.com/fedweave/fedweave/models"
	"github.com/fedweave/fedweave/server"
	"github.com/fedweave/fedweave/server/servertest"
)

// adversary is a client of the federation built from the generated stubs, so that it can break
// the protocol in ways the SDK never does.
type adversary struct {
	t      *testing.T
	api    pb.FederationClient
	stream pb.Federation_ParticipateClient
	start  *pb.RoundStart
	p      agg.Params // the open round's aggregation parameters, as an honest client has them
}

// dialFederation opens a gRPC connection to addr that speaks as id over mutual TLS.
// It trusts the servers of ca.
func dialFederation(t *testing.T, addr string, id *pki.Identity, ca *pki.CA) pb.FederationClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(pki.ClientTLS(id, ca.Pool(), "127.0.0.1"))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return pb.NewFederationClient(conn)
}

// newAdversary joins the task as org "mallory" and opens the round channel, without a Hello.
func newAdversary(t *testing.T, ctx context.Context, f *servertest.Federation, addr string) *adversary {
	t.Helper()
	id, err := f.Identity("mallory", pki.RoleClient, "node")
	if err != nil {
		t.Fatal(err)
	}
	api := dialFederation(t, addr, id, f.CA)
	if _, err := api.Join(ctx, &pb.JoinRequest{Task: "triage", Records: 10}); err != nil {
		t.Fatalf("adversary: join: %v", err)
	}
	stream, err := api.Participate(ctx)
	if err != nil {
		t.Fatalf("adversary: participate: %v", err)
	}
	return &adversary{t: t, api: api, stream: stream}
}

func (a *adversary) send(m *pb.ClientMessage) {
	// A send may fail once the server has ended the stream; the status comes with Recv.
	_ = a.stream.Send(m)
}

func (a *adversary) hello(task string) {
	a.send(&pb.ClientMessage{Body: &pb.ClientMessage_Hello{Hello: &pb.Hello{Task: task}}})
}

// awaitRound reads the RoundStart and every parameter chunk of the next round.
func (a *adversary) awaitRound() {
	a.t.Helper()
	var got uint32
	for a.start == nil || got < a.start.GetParamChunks() {
		m, err := a.stream.Recv()
		if err != nil {
			a.t.Fatalf("adversary: waiting for a round: %v", err)
		}
		switch b := m.Body.(type) {
		case *pb.ServerMessage_Start:
			a.start, got = b.Start, 0
		case *pb.ServerMessage_Params:
			got++
		}
	}
	raw, err := hex.DecodeString(a.start.GetLayoutHash())
	if err != nil || len(raw) != 32 {
		a.t.Fatalf("adversary: layout hash %q", a.start.GetLayoutHash())
	}
	a.p = agg.Params{Round: a.start.GetRound(), NumValues: int(a.start.GetNumParams()), NumGroups: models.NumGroups}
	copy(a.p.LayoutHash[:], raw)
}

// input is a well-formed update that would change the model if it were aggregated.
func (a *adversary) input() agg.Input {
	in := agg.Input{Values: make([]float32, a.p.NumValues), Weights: make([]float64, a.p.NumGroups)}
	for i := range in.Values {
		in.Values[i] = 0.5
	}
	for i := range in.Weights {
		in.Weights[i] = 1
	}
	return in
}

// zero is a well-formed update that adds nothing: zero values of zero weight.
func (a *adversary) zero() agg.Input {
	return agg.Input{Values: make([]float32, a.p.NumValues), Weights: make([]float64, a.p.NumGroups)}
}

// chunk sends one phase chunk of the open round.
func (a *adversary) chunk(round uint64, phase, index, total uint32, data []byte) {
	a.send(&pb.ClientMessage{Body: &pb.ClientMessage_Phase{Phase: &pb.PhaseMessage{
		Round: round, Phase: phase, Index: index, Total: total, Data: data,
	}}})
}

// update sends msg as phase 0 of the open round, in chunks as the SDK does.
func (a *adversary) update(msg []byte) {
	parts := splitChunks(msg)
	for i, c := range parts {
		a.chunk(a.p.Round, 0, uint32(i), uint32(len(parts)), c)
	}
}

func splitChunks(b []byte) [][]byte {
	var out [][]byte
	for len(b) > server.ChunkSize {
		out = append(out, b[:server.ChunkSize])
		b = b[server.ChunkSize:]
	}
	return append(out, b)
}

func (a *adversary) eval(round uint64, acc, loss float64) {
	a.send(&pb.ClientMessage{Body: &pb.ClientMessage_Eval{Eval: &pb.EvalReport{Round: round, Records: 10, Accuracy: acc, Loss: loss}}})
}

// end reads until the server ends the stream and returns how it ended.
func (a *adversary) end() error {
	for {
		if _, err := a.stream.Recv(); err != nil {
			return err
		}
	}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// badInputTask is one round that commits with the two honest clients alone.
func badInputTask() server.TaskConfig { return testTask(1, 2) }

// honestOnly runs the task with the honest clients alone and returns the committed parameters.
// Local training is deterministic (seeded), and with two contributors the server's sum does not
// depend on their order, so a round with the same honest clients must commit bit for bit the
// same parameters, whatever else was refused.
func honestOnly(t *testing.T, data []*dataset.Dataset) []float32 {
	f, err := servertest.NewFederation(t.TempDir(), "consortium")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := f.StartServer(server.Config{Task: badInputTask()}, server.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	wg, errs := startClients(t, ctx, f, srv.Addr, data)
	waitFor(t, "the honest clients to connect", 20*time.Second, func() bool { return srv.Connected() == len(data) })
	if err := srv.Run(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("honest client: %v", err)
		}
	}
	round, params := srv.Params()
	if round != 1 {
		t.Fatalf("honest-only run committed round %d", round)
	}
	return params
}

// TestBadClientInput runs one round with two honest SDK clients and an adversary that breaks
// the protocol in one way: the adversary's stream must end with a status that says what was
// wrong, its update must not be aggregated, and the round must commit with the honest clients
// alone, to exactly the parameters they produce without the adversary.
func TestBadClientInput(t *testing.T) {
	honest := partition(2, 60)
	want := honestOnly(t, honest)

	nan, inf := math.NaN(), math.Inf(1)
	type badCase struct {
		name string
		// first, if set, is sent instead of the Hello; the adversary never enters a cohort.
		first func(a *adversary)
		// act misbehaves once the round's start and parameters have arrived.
		act    func(a *adversary)
		code   codes.Code
		phrase string
		// accepted: the adversary sent a valid (zero) update before misbehaving; that update
		// is in the aggregate, and the lineage must say so.
		accepted bool
		// notRefused: the transport, not the round, ended the stream, so the record counts
		// the adversary as dropped rather than refused.
		notRefused bool
	}
	cases := []badCase{
		{
			name: "update/truncated",
			act: func(a *adversary) {
				b := agg.EncodePlain(a.p, a.input())
				a.update(b[:len(b)-40])
			},
			code: codes.InvalidArgument, phrase: "bytes, want",
		},
		{
			name: "update/too few values",
			act: func(a *adversary) {
				in := a.input()
				in.Values = in.Values[:len(in.Values)-1]
				a.update(agg.EncodePlain(a.p, in))
			},
			code: codes.InvalidArgument, phrase: "values in 4 groups, want",
		},
		{
			name: "update/too few weights",
			act: func(a *adversary) {
				in := a.input()
				in.Weights = in.Weights[:1]
				a.update(agg.EncodePlain(a.p, in))
			},
			code: codes.InvalidArgument, phrase: "in 1 groups, want",
		},
		{
			name: "update/shorter than header",
			act:  func(a *adversary) { a.update([]byte("FWP1")) },
			code: codes.InvalidArgument, phrase: "shorter than its header",
		},
		{
			name: "update/wrong format",
			act: func(a *adversary) {
				b := agg.EncodePlain(a.p, a.input())
				copy(b, "FWP2")
				a.update(b)
			},
			code: codes.InvalidArgument, phrase: "not a plaintext update",
		},
		{
			name: "update/wrong layout hash",
			act: func(a *adversary) {
				p := a.p
				p.LayoutHash[7] ^= 0x40
				a.update(agg.EncodePlain(p, a.input()))
			},
			code: codes.InvalidArgument, phrase: "another model layout",
		},
		{
			name: "update/NaN value",
			act: func(a *adversary) {
				in := a.input()
				in.Values[3] = float32(nan)
				a.update(agg.EncodePlain(a.p, in))
			},
			code: codes.InvalidArgument, phrase: "value 3 is not finite",
		},
		{
			name: "update/-Inf value",
			act: func(a *adversary) {
				in := a.input()
				in.Values[len(in.Values)-1] = float32(math.Inf(-1))
				a.update(agg.EncodePlain(a.p, in))
			},
			code: codes.InvalidArgument, phrase: "is not finite",
		},
		{
			name: "update/+Inf weight",
			act: func(a *adversary) {
				in := a.input()
				in.Weights[0] = inf
				a.update(agg.EncodePlain(a.p, in))
			},
			code: codes.InvalidArgument, phrase: "weight 0 is +Inf",
		},
		{
			name: "update/NaN weight",
			act: func(a *adversary) {
				in := a.input()
				in.Weights[1] = nan
				a.update(agg.EncodePlain(a.p, in))
			},
			code: codes.InvalidArgument, phrase: "weight 1 is NaN",
		},
		{
			name: "update/negative weight",
			act: func(a *adversary) {
				in := a.input()
				in.Weights[2] = -1
				a.update(agg.EncodePlain(a.p, in))
			},
			code: codes.InvalidArgument, phrase: "weight 2 is -1, want a finite non-negative number",
		},
		{
			name: "update/stale round inside",
			act: func(a *adversary) {
				p := a.p
				p.Round--
				a.update(agg.EncodePlain(p, a.input()))
			},
			code: codes.InvalidArgument, phrase: "update for round 0, this is round 1",
		},
		{
			name: "round/stale",
			act: func(a *adversary) {
				b := agg.EncodePlain(a.p, a.input())
				a.chunk(a.p.Round-1, 0, 0, 1, b)
			},
			code: codes.FailedPrecondition, phrase: "message for round 0, the open round is 1",
		},
		{
			name: "round/future",
			act: func(a *adversary) {
				p := a.p
				p.Round++
				a.chunk(p.Round, 0, 0, 1, agg.EncodePlain(p, a.input()))
			},
			code: codes.FailedPrecondition, phrase: "message for round 2, the open round is 1",
		},
		{
			name: "phase/wrong",
			act: func(a *adversary) {
				a.chunk(a.p.Round, 1, 0, 1, agg.EncodePlain(a.p, a.input()))
			},
			code: codes.InvalidArgument, phrase: "message for phase 1, the open phase is 0",
		},
		{
			name: "phase/second update after a valid one",
			act: func(a *adversary) {
				a.update(agg.EncodePlain(a.p, a.zero()))
				a.update(agg.EncodePlain(a.p, a.input()))
			},
			code: codes.InvalidArgument, phrase: "already answered", accepted: true,
		},
		{
			name: "chunk/replayed",
			act: func(a *adversary) {
				b := agg.EncodePlain(a.p, a.input())
				half := len(b) / 2
				a.chunk(a.p.Round, 0, 0, 2, b[:half])
				a.chunk(a.p.Round, 0, 0, 2, b[:half])
			},
			code: codes.InvalidArgument, phrase: "chunk 0 of 2 out of order or replayed",
		},
		{
			name: "chunk/out of order",
			act: func(a *adversary) {
				b := agg.EncodePlain(a.p, a.input())
				half := len(b) / 2
				a.chunk(a.p.Round, 0, 1, 2, b[half:])
				a.chunk(a.p.Round, 0, 0, 2, b[:half])
			},
			code: codes.InvalidArgument, phrase: "chunk 1 of 2 out of order or replayed",
		},
		{
			name: "chunk/total changes",
			act: func(a *adversary) {
				b := agg.EncodePlain(a.p, a.input())
				third := len(b) / 3
				a.chunk(a.p.Round, 0, 0, 3, b[:third])
				a.chunk(a.p.Round, 0, 1, 2, b[third:])
			},
			code: codes.InvalidArgument, phrase: "chunk 1 of 2 out of order or replayed",
		},
		{
			name: "chunk/total zero",
			act: func(a *adversary) {
				a.chunk(a.p.Round, 0, 0, 0, agg.EncodePlain(a.p, a.input()))
			},
			code: codes.InvalidArgument, phrase: "chunk 0 of 0",
		},
		{
			name: "chunk/larger than 1 MiB",
			act: func(a *adversary) {
				a.chunk(a.p.Round, 0, 0, 1, make([]byte, server.ChunkSize+1))
			},
			code: codes.InvalidArgument, phrase: "larger than this round allows",
		},
		{
			name: "chunk/total lies to grow the message",
			act: func(a *adversary) {
				// Full chunks under a total that never comes: the server must stop buffering
				// at the round's bound, well before the promised 4 TiB.
				data := make([]byte, server.ChunkSize)
				for i := range uint32(64) {
					if err := a.stream.Send(&pb.ClientMessage{Body: &pb.ClientMessage_Phase{Phase: &pb.PhaseMessage{
						Round: a.p.Round, Index: i, Total: 1 << 22, Data: data,
					}}}); err != nil {
						return
					}
				}
			},
			code: codes.InvalidArgument, phrase: "larger than this round allows",
		},
		{
			name: "chunk/over the transport limit",
			act: func(a *adversary) {
				a.chunk(a.p.Round, 0, 0, 1, make([]byte, 2*server.ChunkSize))
			},
			code: codes.ResourceExhausted, phrase: "larger than max", notRefused: true,
		},
		{
			name: "eval/accuracy 2",
			act:  func(a *adversary) { a.eval(a.p.Round, 2, 0.5) },
			code: codes.InvalidArgument, phrase: "accuracy outside [0, 1]",
		},
		{
			name: "eval/NaN loss",
			act:  func(a *adversary) { a.eval(a.p.Round, 0.5, nan) },
			code: codes.InvalidArgument, phrase: "non-finite loss",
		},
		{
			name: "eval/negative accuracy",
			act:  func(a *adversary) { a.eval(a.p.Round, -0.1, 0.5) },
			code: codes.InvalidArgument, phrase: "accuracy outside [0, 1]",
		},
		{
			name: "eval/another round",
			act:  func(a *adversary) { a.eval(a.p.Round+1, 0.5, 0.5) },
			code: codes.FailedPrecondition, phrase: "evaluation for round 2",
		},
		{
			name: "eval/forged commitment signature",
			act: func(a *adversary) {
				// Signed with a key that is not the one of the stream's certificate.
				_, other, _ := ed25519.GenerateKey(nil)
				c := bytes.Repeat([]byte{7}, lineage.Size)
				a.send(&pb.ClientMessage{Body: &pb.ClientMessage_Eval{Eval: &pb.EvalReport{
					Round: a.p.Round, Records: 10, Accuracy: 0.5, Loss: 0.5, DatasetCommitment: c,
					Signature: ed25519.Sign(other, lineage.Message("triage", a.p.Round, a.start.GetLayoutHash(), c)),
				}}})
			},
			code: codes.InvalidArgument, phrase: "signature of the dataset commitment does not verify",
		},
		{
			name: "eval/commitment without signature",
			act: func(a *adversary) {
				a.send(&pb.ClientMessage{Body: &pb.ClientMessage_Eval{Eval: &pb.EvalReport{
					Round: a.p.Round, Records: 10, Accuracy: 0.5, Loss: 0.5, DatasetCommitment: make([]byte, lineage.Size),
				}}})
			},
			code: codes.InvalidArgument, phrase: "must be 32 bytes, with a signature",
		},
		{
			name: "eval/twice",
			act: func(a *adversary) {
				a.eval(a.p.Round, 0.5, 0.5)
				a.eval(a.p.Round, 0.5, 0.5)
			},
			code: codes.InvalidArgument, phrase: "a second evaluation report",
		},
		{
			name: "hello/twice",
			act:  func(a *adversary) { a.hello("triage") },
			code: codes.InvalidArgument, phrase: "unexpected message in the middle of a round",
		},
		{
			name: "hello/missing",
			first: func(a *adversary) {
				a.chunk(1, 0, 0, 1, []byte("FWP1"))
			},
			code: codes.InvalidArgument, phrase: "the first message must be a Hello",
		},
		{
			name: "hello/missing, evaluation first",
			first: func(a *adversary) {
				a.eval(1, 0.5, 0.5)
			},
			code: codes.InvalidArgument, phrase: "the first message must be a Hello",
		},
		{
			name:  "hello/another task",
			first: func(a *adversary) { a.hello("other") },
			code:  codes.NotFound, phrase: `no task "other"`,
		},
	}

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f, err := servertest.NewFederation(t.TempDir(), "consortium")
			if err != nil {
				t.Fatal(err)
			}
			srv, err := f.StartServer(server.Config{Task: badInputTask()}, server.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer srv.Close()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()

			a := newAdversary(t, ctx, f, srv.Addr)
			cohort := 3
			var ended error
			if tc.first != nil {
				tc.first(a)
				ended = a.end()
				cohort = 2
			} else {
				a.hello("triage")
			}
			wg, errs := startClients(t, ctx, f, srv.Addr, honest)
			waitFor(t, "every client to connect", 20*time.Second, func() bool { return srv.Connected() == cohort })
			ran := make(chan error, 1)
			go func() { ran <- srv.Run(ctx) }()
			if tc.first == nil {
				a.awaitRound()
				tc.act(a)
				ended = a.end()
			}

			st, ok := status.FromError(ended)
			if !ok || st.Code() != tc.code || !strings.Contains(st.Message(), tc.phrase) {
				t.Errorf("the adversary's stream ended with %v; want code %v and a message with %q", ended, tc.code, tc.phrase)
			}
			if err := <-ran; err != nil {
				t.Fatalf("Run: %v", err)
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Errorf("honest client: %v", err)
				}
			}

			hist, err := srv.History()
			if err != nil {
				t.Fatal(err)
			}
			if len(hist) != 1 {
				t.Fatalf("%d rounds recorded, want 1: %+v", len(hist), hist)
			}
			rec := hist[0]
			wantParts := []string{honestURI(f, 0), honestURI(f, 1)}
			if tc.accepted {
				wantParts = append(wantParts, adversaryURI(f))
			}
			slices.Sort(wantParts)
			got := slices.Sorted(slices.Values(rec.Participants))
			if !slices.Equal(got, wantParts) {
				t.Errorf("participants %q, want %q", got, wantParts)
			}
			wantRefused := 0
			if tc.first == nil && !tc.notRefused {
				wantRefused = 1
			}
			if !rec.Committed || rec.Round != 1 || rec.Cohort != cohort || rec.Refused != wantRefused || rec.Dropped != cohort-len(wantParts) {
				t.Errorf("round record %+v; want committed round 1, cohort %d, %d refused, %d dropped", rec, cohort, wantRefused, cohort-len(wantParts))
			}
			round, params := srv.Params()
			if round != 1 {
				t.Fatalf("the server holds round %d, want 1", round)
			}
			if !slices.Equal(params, want) {
				t.Errorf("committed parameters differ from those the honest clients produce alone (%d of %d values)", countDiff(params, want), len(want))
			}
		})
	}
}

func countDiff(a, b []float32) int {
	if len(a) != len(b) {
		return max(len(a), len(b))
	}
	n := 0
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			n++
		}
	}
	return n
}

// honestURI is the principal startClients gives its i-th client.
func honestURI(f *servertest.Federation, i int) string {
	return pki.Principal{Federation: f.Name, Org: "org" + string(rune('a'+i)), Role: pki.RoleClient, Name: "node"}.URI()
}

func adversaryURI(f *servertest.Federation) string {
	return pki.Principal{Federation: f.Name, Org: "mallory", Role: pki.RoleClient, Name: "node"}.URI()
}

// TestBadClientCertificate: a certificate of another CA fails the handshake, and a certificate
// of this federation whose role is not client may not train.
func TestBadClientCertificate(t *testing.T) {
	f, err := servertest.NewFederation(t.TempDir(), "consortium")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := f.StartServer(server.Config{Task: testTask(1, 1)}, server.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()

	t.Run("another CA", func(t *testing.T) {
		other, err := servertest.NewFederation(t.TempDir(), "consortium")
		if err != nil {
			t.Fatal(err)
		}
		id, err := other.Identity("orga", pki.RoleClient, "node")
		if err != nil {
			t.Fatal(err)
		}
		// The client trusts the right CA, so only the server's check of its certificate fails.
		api := dialFederation(t, srv.Addr, id, f.CA)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err = api.Join(ctx, &pb.JoinRequest{Task: "triage"})
		// Only the code is stable: the client reads either the server's TLS alert ("unknown
		// certificate authority") or a broken pipe, depending on when the server hangs up.
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("Join with a certificate of another CA: %v; want Unavailable", err)
		}
		stream, err := api.Participate(ctx)
		if err == nil {
			stream.Send(&pb.ClientMessage{Body: &pb.ClientMessage_Hello{Hello: &pb.Hello{Task: "triage"}}})
			_, err = stream.Recv()
		}
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("Participate with a certificate of another CA: %v; want Unavailable", err)
		}
	})

	for _, role := range []pki.Role{pki.RoleReader, pki.RoleAdmin, pki.RoleServer} {
		t.Run("role "+string(role), func(t *testing.T) {
			id, err := f.Identity("orga", role, "node")
			if err != nil {
				t.Fatal(err)
			}
			api := dialFederation(t, srv.Addr, id, f.CA)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			phrase := "cannot Join: only a Client can"
			_, err = api.Join(ctx, &pb.JoinRequest{Task: "triage"})
			if status.Code(err) != codes.PermissionDenied || !strings.Contains(status.Convert(err).Message(), phrase) {
				t.Fatalf("Join as %s: %v; want PermissionDenied saying %q", role, err, phrase)
			}
			stream, err := api.Participate(ctx)
			if err != nil {
				t.Fatal(err)
			}
			stream.Send(&pb.ClientMessage{Body: &pb.ClientMessage_Hello{Hello: &pb.Hello{Task: "triage"}}})
			_, err = stream.Recv()
			if status.Code(err) != codes.PermissionDenied {
				t.Fatalf("Participate as %s: %v; want PermissionDenied", role, err)
			}
		})
	}
	if n := srv.Connected(); n != 0 {
		t.Errorf("%d refused clients hold a round channel", n)
	}
	if _, err := srv.History(); err != nil {
		t.Fatal(err)
	}
}
