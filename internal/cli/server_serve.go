package cli

import (
	"context"
	"fmt"

	"github.com/fedweave/fedweave/server"
)

// serveAfterTask keeps a server whose task is complete serving its models (the Inference
// service) until ctx is done: "fedweave server --serve".
func serveAfterTask(ctx context.Context, env *Env, srv *server.Server, round uint64) error {
	msg := fmt.Sprintf("fedweave server: serving the model of round %d to readers", round)
	if addr := srv.HTTPAddr(); addr != "" {
		msg += ", also over HTTPS on " + addr
	}
	fmt.Fprintln(env.Stderr, msg+"; interrupt to stop")
	<-ctx.Done()
	fmt.Fprintln(env.Stderr, "fedweave server: stopped serving")
	return nil
}
