// Package fedweavev1 is the generated Go code of fedweave's gRPC API (federation.proto, admin.proto,
// inference.proto).
// Regenerate with `go generate ./api/...` (needs protoc, protoc-gen-go and protoc-gen-go-grpc).
package fedweavev1

//go:generate protoc --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative federation.proto admin.proto inference.proto
