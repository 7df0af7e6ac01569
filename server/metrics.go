package server

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the server's Prometheus metrics, on a registry of its own so that two servers in
// one process (tests, the demo) do not collide.
type metrics struct {
	reg       *prometheus.Registry
	rounds    *prometheus.CounterVec
	duration  prometheus.Histogram
	connected prometheus.Gauge
	dropped   prometheus.Counter
	rejected  *prometheus.CounterVec
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		rounds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fedweave_rounds_total", Help: "Rounds run, by outcome (committed or aborted).",
		}, []string{"outcome"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "fedweave_round_seconds", Help: "Duration of rounds.", Buckets: prometheus.ExponentialBuckets(0.5, 2, 12),
		}),
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "fedweave_connected_clients", Help: "Clients with an open round channel.",
		}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fedweave_dropped_clients_total", Help: "Cohort members that did not contribute to their round.",
		}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fedweave_rejected_messages_total", Help: "Client messages refused, by status code.",
		}, []string{"code"}),
	}
	m.reg.MustRegister(m.rounds, m.duration, m.connected, m.dropped, m.rejected,
		prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) round(r RoundRecord) {
	outcome := "aborted"
	if r.Committed {
		outcome = "committed"
	}
	m.rounds.WithLabelValues(outcome).Inc()
	m.duration.Observe(r.Seconds)
	m.dropped.Add(float64(r.Dropped))
}

func (m *metrics) handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	return mux
}
