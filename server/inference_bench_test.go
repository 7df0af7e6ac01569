package server_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	pb "github.com/fedweave/fedweave/api/fedweave/v1"
	"github.com/fedweave/fedweave/client"
	"github.com/fedweave/fedweave/crypto/pki"
	"github.com/fedweave/fedweave/dataset"
	"github.com/fedweave/fedweave/explain"
	"github.com/fedweave/fedweave/models"
	"github.com/fedweave/fedweave/server"
	"github.com/fedweave/fedweave/server/servertest"
)

// The inference benchmarks: latency per record and throughput of Predict and Explain with
// concurrent callers, against a real server over loopback with mutual TLS, by gRPC and by
// HTTPS, beside the same computation in process (no network, no authorization, one caller),
// the floor. Each reports p50-ms and p99-ms (latency of one call as its caller sees it),
// req/s (calls completed per second of the run) and, for the served variants, p50-vs-local
// (p50 over the in-process mean). Callers: one (grpc-1-caller: the latency of a record on an
// idle server), else 4 per CPU (b.SetParallelism(4)): the throughput under load, where the
// latency includes the wait for one of serve.workers models.
//
//	go test ./server -run '^$' -bench 'Predict|Explain' -benchtime 200x

// benchServer starts a server with one committed round and no practical rate limit.
func benchServer(b *testing.B) (*servertest.Federation, *servertest.Running) {
	b.Helper()
	f, err := servertest.NewFederation(b.TempDir(), "consortium")
	if err != nil {
		b.Fatal(err)
	}
	task := testTask(1, 1)
	task.Classes, task.TabularFields = dataset.SyntheticClasses, dataset.SyntheticTabularFields
	srv, err := f.StartServer(server.Config{Task: task, HTTPListen: "127.0.0.1:0", Serve: server.ServeConfig{RatePerSecond: 1e9, Burst: 1 << 30}}, server.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { srv.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	id, err := f.Identity("orga", pki.RoleClient, "node")
	if err != nil {
		b.Fatal(err)
	}
	c, err := client.New(client.Config{Server: srv.Addr, Task: "triage", Identity: id, CAPool: f.Pool(), Source: client.DatasetSource(partition(1, 200)[0])})
	if err != nil {
		b.Fatal(err)
	}
	go c.Run(ctx)
	if err := srv.Run(ctx); err != nil {
		b.Fatal(err)
	}
	return f, srv
}

// latencies collects the latency of every call of a parallel run.
type latencies struct {
	mu  sync.Mutex
	all []time.Duration
}

func (l *latencies) add(d []time.Duration) {
	l.mu.Lock()
	l.all = append(l.all, d...)
	l.mu.Unlock()
}

func (l *latencies) quantile(q float64) time.Duration {
	slices.Sort(l.all)
	return l.all[min(len(l.all)-1, int(q*float64(len(l.all))))]
}

// runParallel calls call from 4 callers per CPU and reports the latency percentiles and
// throughput; it returns the p50.
func runParallel(b *testing.B, call func(rec []byte) error, recs [][]byte) time.Duration {
	var lat latencies
	b.SetParallelism(4)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(p *testing.PB) {
		var mine []time.Duration
		i := 0
		for p.Next() {
			t0 := time.Now()
			if err := call(recs[i%len(recs)]); err != nil {
				b.Error(err)
				return
			}
			mine = append(mine, time.Since(t0))
			i++
		}
		lat.add(mine)
	})
	elapsed := time.Since(start)
	b.StopTimer()
	if len(lat.all) == 0 {
		b.Fatal("no call completed")
	}
	p50 := lat.quantile(0.5)
	b.ReportMetric(float64(p50.Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat.quantile(0.99).Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(len(lat.all))/elapsed.Seconds(), "req/s")
	b.ReportMetric(float64(4*runtime.GOMAXPROCS(0)), "callers")
	b.ReportMetric(0, "ns/op")
	return p50
}

// runSerial is runParallel with one caller: the latency of a record on an idle server.
func runSerial(b *testing.B, call func(rec []byte) error, recs [][]byte) time.Duration {
	var lat latencies
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		t0 := time.Now()
		if err := call(recs[i%len(recs)]); err != nil {
			b.Fatal(err)
		}
		lat.all = append(lat.all, time.Since(t0))
	}
	elapsed := time.Since(start)
	b.StopTimer()
	p50 := lat.quantile(0.5)
	b.ReportMetric(float64(p50.Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat.quantile(0.99).Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(len(lat.all))/elapsed.Seconds(), "req/s")
	b.ReportMetric(1, "callers")
	b.ReportMetric(0, "ns/op")
	return p50
}

// local measures the in-process mean latency of one caller on a model of the server's round.
func local(b *testing.B, srv *servertest.Running, recs [][]byte, explaining bool) time.Duration {
	_, params := srv.Params()
	m, err := newModel(srv, params)
	if err != nil {
		b.Fatal(err)
	}
	d := dataset.Synthetic(dataset.SyntheticConfig{N: 1, Seed: 1})
	run := func(rec []byte) {
		r, err := dataset.DecodeRecord(rec, &d.Schema)
		if err != nil {
			b.Fatal(err)
		}
		if explaining {
			_, err = explain.Explain(m, &r, explain.Options{})
		} else {
			_, err = explain.Modalities(m, &r)
		}
		if err != nil {
			b.Fatal(err)
		}
	}
	for _, r := range recs[:4] { // compile the graphs
		run(r)
	}
	const n = 32
	t0 := time.Now()
	for i := range n {
		run(recs[i%len(recs)])
	}
	return time.Since(t0) / n
}

func benchInference(b *testing.B, explaining bool) {
	f, srv := benchServer(b)
	recs := records(b, 64)
	id, err := f.Identity("orga", pki.RoleReader, "bench")
	if err != nil {
		b.Fatal(err)
	}
	floor := local(b, srv, recs, explaining)
	ctx := context.Background()

	b.Run("in-process", func(b *testing.B) {
		b.ReportMetric(float64(floor.Microseconds())/1000, "mean-ms")
		b.ReportMetric(float64(time.Second)/float64(floor), "req/s")
		b.ReportMetric(0, "ns/op")
	})
	conn := dialB(b, srv.Addr, id, f)
	api := pb.NewInferenceClient(conn)
	grpcCall := func(rec []byte) error {
		var err error
		if explaining {
			_, err = api.Explain(ctx, &pb.ExplainRequest{Record: rec})
		} else {
			_, err = api.Predict(ctx, &pb.PredictRequest{Record: rec})
		}
		return err
	}
	b.Run("grpc-1-caller", func(b *testing.B) {
		p50 := runSerial(b, grpcCall, recs)
		b.ReportMetric(float64(p50)/float64(floor), "p50-vs-local")
	})
	b.Run("grpc", func(b *testing.B) {
		p50 := runParallel(b, grpcCall, recs)
		b.ReportMetric(float64(p50)/float64(floor), "p50-vs-local")
	})
	b.Run("https", func(b *testing.B) {
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: pki.ClientTLS(id, f.Pool(), "127.0.0.1"), MaxIdleConnsPerHost: 64}}
		url := "https://" + srv.HTTPAddr() + "/v1/predict"
		if explaining {
			url = "https://" + srv.HTTPAddr() + "/v1/explain"
		}
		p50 := runParallel(b, func(rec []byte) error {
			resp, err := hc.Post(url, "application/json", bytes.NewReader(append(append([]byte(`{"record":`), rec...), '}')))
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			if _, err := io.Copy(io.Discard, resp.Body); err != nil {
				return err
			}
			if resp.StatusCode != http.StatusOK {
				return io.ErrUnexpectedEOF
			}
			return nil
		}, recs)
		b.ReportMetric(float64(p50)/float64(floor), "p50-vs-local")
	})
}

func BenchmarkPredict(b *testing.B) { benchInference(b, false) }
func BenchmarkExplain(b *testing.B) { benchInference(b, true) }

func dialB(b *testing.B, addr string, id *pki.Identity, f *servertest.Federation) *grpc.ClientConn {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(pki.ClientTLS(id, f.Pool(), "127.0.0.1"))))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	return conn
}

func newModel(srv *servertest.Running, params []float32) (*models.Model, error) {
	m, err := models.New(srv.Spec(), 1)
	if err != nil {
		return nil, err
	}
	return m, m.SetParams(params, m.LayoutHash())
}
