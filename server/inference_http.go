package server

// The inference service over HTTPS with JSON, for callers without gRPC:
//
//	POST /v1/predict   {"task": "triage", "round": 0, "record": {...}}
//	POST /v1/explain   {"task": "triage", "round": 0, "record": {...}, "class": "", "samples": 32, "seed": 0}
//
// task and round are optional (the server's task, its latest servable model), record is the
// manifest-form object of dataset.DecodeRecord, and the answer is package explain's Result as
// JSON (the heatmap base64 in heatmap_png). The listener speaks TLS 1.3 with a client
// certificate required, the same configuration as the gRPC listener (pki.ServerTLS), and each
// request is authorized by the same code as a gRPC call (authorizeCall), then served by the same
// handler. Errors are {"error": "...", "code": "InvalidArgument"} with the HTTP status of the
// gRPC code: 400 InvalidArgument, 401 Unauthenticated, 403 PermissionDenied, 404 NotFound, 413
// for a body over serve.max_request_bytes, 429 ResourceExhausted, 500 Internal, 503 Unavailable.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/fedweave/fedweave/api/fedweave/v1"
	"github.com/fedweave/fedweave/crypto/pki"
)

// httpEnvelope is the extra room an HTTP body has over the record it carries.
const httpEnvelope = 4 << 10

// listen starts the HTTPS API on the config's http_listen, when set.
func (in *inference) listen() error {
	addr := in.s.cfg.HTTPListen
	if addr == "" {
		return nil
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("server: http_listen: %w", err)
	}
	go in.s.ServeInferenceHTTP(lis)
	return nil
}

// ServeInferenceHTTP serves the inference service's HTTPS API on lis until Close; Serve calls it
// itself when the config sets http_listen. It returns http.ErrServerClosed after Close.
func (s *Server) ServeInferenceHTTP(lis net.Listener) error {
	in := s.infer
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/predict", in.httpHandler(false))
	mux.HandleFunc("POST /v1/explain", in.httpHandler(true))
	hs := &http.Server{
		Handler:           mux,
		TLSConfig:         pki.ServerTLS(s.opt.Identity, s.opt.CAPool),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    16 << 10,
		// Failed handshakes (certificates of another CA) are the server's business, not stderr's.
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	in.httpMu.Lock()
	if in.httpSrv != nil {
		in.httpMu.Unlock()
		return errors.New("server: the inference HTTPS API is served already")
	}
	in.httpSrv, in.httpAddr = hs, lis.Addr().String()
	in.httpMu.Unlock()
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		hs.Close()
		return http.ErrServerClosed
	}
	return hs.ServeTLS(lis, "", "")
}

// HTTPAddr is the address the inference HTTPS API listens on, "" until it does.
func (s *Server) HTTPAddr() string {
	s.infer.httpMu.Lock()
	defer s.infer.httpMu.Unlock()
	return s.infer.httpAddr
}

func (in *inference) close() {
	in.httpMu.Lock()
	hs := in.httpSrv
	in.httpMu.Unlock()
	if hs != nil {
		hs.Close()
	}
}

// httpRequest is the JSON body of both endpoints; Class, Samples and Seed are for explain.
type httpRequest struct {
	Task    string          `json:"task"`
	Round   uint64          `json:"round"`
	Record  json.RawMessage `json:"record"`
	Class   string          `json:"class"`
	Samples uint32          `json:"samples"`
	Seed    uint64          `json:"seed"`
}

// decodeHTTPRequest decodes a body strictly: one JSON object, no unknown field, a record
// object, and for predict none of explain's fields.
func decodeHTTPRequest(body []byte, explain bool) (httpRequest, error) {
	var q httpRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&q); err != nil {
		return q, fmt.Errorf("body: %s", jsonError(err))
	}
	if dec.More() {
		return q, errors.New("body: unexpected data after the JSON object")
	}
	if t := bytes.TrimSpace(q.Record); len(t) == 0 || t[0] != '{' {
		return q, errors.New(`body: "record" must be a JSON object`)
	}
	if !explain && (q.Class != "" || q.Samples != 0 || q.Seed != 0) {
		return q, errors.New(`body: "class", "samples" and "seed" are for /v1/explain`)
	}
	return q, nil
}

// jsonError drops encoding/json's prefix.
func jsonError(err error) string {
	msg := err.Error()
	if len(msg) > 6 && msg[:6] == "json: " {
		msg = msg[6:]
	}
	if errors.Is(err, io.EOF) {
		return "empty, want a JSON object"
	}
	return msg
}

func (in *inference) httpHandler(explain bool) http.HandlerFunc {
	method := "/fedweave.v1.Inference/Predict"
	if explain {
		method = "/fedweave.v1.Inference/Explain"
	}
	return func(w http.ResponseWriter, r *http.Request) {
		s := in.s
		if r.TLS == nil {
			writeHTTPError(w, status.Error(codes.Unauthenticated, "not a TLS connection"))
			return
		}
		p, err := pki.PrincipalFromState(*r.TLS, s.cfg.Federation)
		if err != nil {
			writeHTTPError(w, status.Error(codes.Unauthenticated, "the certificate names no principal of this federation"))
			return
		}
		limit := int64(s.cfg.Serve.MaxRequestBytes + httpEnvelope)
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
		if err != nil {
			if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
				writeJSON(w, http.StatusRequestEntityTooLarge, httpErrorBody{
					Error: fmt.Sprintf("body larger than %d bytes (serve.max_request_bytes and %d for the envelope)", limit, httpEnvelope),
					Code:  codes.InvalidArgument.String(),
				})
				return
			}
			writeHTTPError(w, status.Errorf(codes.InvalidArgument, "body: %v", err))
			return
		}
		q, err := decodeHTTPRequest(body, explain)
		if err != nil {
			writeHTTPError(w, status.Error(codes.InvalidArgument, err.Error()))
			return
		}
		var req any
		var task *string
		var round *uint64
		if explain {
			er := &pb.ExplainRequest{Task: q.Task, Round: q.Round, Record: q.Record, Class: q.Class, Samples: q.Samples, Seed: q.Seed}
			req, task, round = er, &er.Task, &er.Round
		} else {
			pr := &pb.PredictRequest{Task: q.Task, Round: q.Round, Record: q.Record}
			req, task, round = pr, &pr.Task, &pr.Round
		}
		if err := s.authorizeCall(p, method, req); err != nil {
			writeHTTPError(w, err)
			return
		}
		res, err := in.serve(r.Context(), p, inferRequest{
			task: *task, round: *round, record: q.Record, explain: explain,
			class: q.Class, samples: q.Samples, seed: q.Seed,
		})
		if err != nil {
			writeHTTPError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, res)
	}
}

type httpErrorBody struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

// httpStatus maps the gRPC codes the service returns to HTTP statuses.
var httpStatus = map[codes.Code]int{
	codes.InvalidArgument:   http.StatusBadRequest,
	codes.Unauthenticated:   http.StatusUnauthorized,
	codes.PermissionDenied:  http.StatusForbidden,
	codes.NotFound:          http.StatusNotFound,
	codes.ResourceExhausted: http.StatusTooManyRequests,
	codes.Unavailable:       http.StatusServiceUnavailable,
	codes.Canceled:          499,
	codes.DeadlineExceeded:  http.StatusGatewayTimeout,
}

func writeHTTPError(w http.ResponseWriter, err error) {
	st := status.Convert(err)
	code, ok := httpStatus[st.Code()]
	if !ok {
		code = http.StatusInternalServerError
	}
	if st.Code() == codes.ResourceExhausted {
		w.Header().Set("Retry-After", "1")
	}
	writeJSON(w, code, httpErrorBody{Error: st.Message(), Code: st.Code().String()})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		code, b = http.StatusInternalServerError, []byte(`{"error":"the answer could not be encoded","code":"Internal"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	w.Write(append(b, '\n'))
}
