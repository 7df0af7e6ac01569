package server_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/fedweave/fedweave/crypto/pki"
	"github.com/fedweave/fedweave/server"
	"github.com/fedweave/fedweave/server/servertest"
)

// TestHealthAndMetrics: gRPC health answers SERVING over mutual TLS, and /metrics counts the
// rounds of a short task.
func TestHealthAndMetrics(t *testing.T) {
	f, err := servertest.NewFederation(t.TempDir(), "consortium")
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	metricsAddr := l.Addr().String()
	l.Close()
	srv, err := f.StartServer(server.Config{Task: testTask(1, 2), MetricsListen: metricsAddr}, server.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()

	id, err := f.Identity("orga", pki.RoleClient, "probe")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(srv.Addr, grpc.WithTransportCredentials(credentials.NewTLS(pki.ClientTLS(id, f.Pool(), "127.0.0.1"))))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var hr *healthpb.HealthCheckResponse
	for deadline := time.Now().Add(10 * time.Second); ; {
		hr, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil || hr.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health: %v, %v", hr.GetStatus(), err)
	}

	wg, errs := startClients(t, ctx, f, srv.Addr, partition(2, 60))
	if err := srv.Run(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, want := range []string{`fedweave_rounds_total{outcome="committed"} 1`, "fedweave_round_seconds_count 1", "fedweave_connected_clients"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}
