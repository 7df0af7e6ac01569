package cli

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/fedweave/fedweave/crypto/pki"
	"github.com/fedweave/fedweave/internal/store"
	"github.com/fedweave/fedweave/policy"
)

// Hidden commands that make and damage a server's audit log, for testdata/script/audit.txtar.
func init() {
	testCommands = append(testCommands, testAuditLogCmd, testAuditTamperCmd)
}

// testAuditLogCmd appends events to the audit log of a store, signing checkpoints with a
// server's certificate key, as a running server would.
var testAuditLogCmd = &Command{
	Name:    "testauditlog",
	Summary: "write an audit log (tests only)",
	Usage:   "usage: fedweave testauditlog --dir DIR --key-file FILE --cert FILE --key FILE -n N [--checkpoint-every M]\n\nExample:\n\n\t$ fedweave testauditlog --dir db --key-file master.key --cert agg.crt --key agg.key -n 12\n",
	Hidden:  true,
	Flags: func(flags *flag.FlagSet) RunFunc {
		dir, keyFile := storeFlags(flags)
		cert := flags.String("cert", "", "server `certificate`")
		key := flags.String("key", "", "server `key`")
		n := flags.Int("n", 10, "`number` of events")
		every := flags.Int("checkpoint-every", 5, "sign a checkpoint after this `many` events")
		return func(ctx context.Context, env *Env, args []string) error {
			if _, err := os.Stat(*keyFile); errors.Is(err, fs.ErrNotExist) {
				if err := store.NewKeyFile(*keyFile); err != nil {
					return err
				}
			}
			id, err := pki.LoadIdentity(*cert, *key)
			if err != nil {
				return err
			}
			st, err := store.Open(store.Options{Dir: *dir, KeyFile: *keyFile, NoSync: true})
			if err != nil {
				return err
			}
			defer st.Close()
			log := policy.NewAuditLog(st, id.Key)
			types := []policy.EventType{policy.EventJoin, policy.EventRound, policy.EventPolicyChange,
				policy.EventDenial, policy.EventModelDownload, policy.EventErasure}
			start := time.Date(2026, 5, 1, 9, 30, 0, 0, time.UTC)
			for i := range *n {
				ev := policy.Event{
					Time:      start.Add(time.Duration(i) * time.Second),
					Type:      types[i%len(types)],
					Principal: fmt.Sprintf("fedweave://acme/org/hospital-a/client/node%d", i),
					Action:    "Join",
					Resource:  `Task::"triage"`,
					Decision:  "allow",
					Details:   map[string]string{"policies": "member-clients-train"},
				}
				if _, err := log.Append(ev); err != nil {
					return err
				}
				if *every > 0 && (i+1)%*every == 0 {
					if _, err := log.Checkpoint(); err != nil {
						return err
					}
				}
			}
			return nil
		}
	},
}

// testAuditTamperCmd changes or removes one stored entry through the store, as someone holding
// the master key could.
var testAuditTamperCmd = &Command{
	Name:    "testaudittamper",
	Summary: "change an audit entry (tests only)",
	Usage:   "usage: fedweave testaudittamper --dir DIR --key-file FILE (--change I | --remove I)\n\nExample:\n\n\t$ fedweave testaudittamper --dir db --key-file master.key --change 3\n",
	Hidden:  true,
	Flags: func(flags *flag.FlagSet) RunFunc {
		dir, keyFile := storeFlags(flags)
		change := flags.Int("change", -1, "`index` of the entry to change")
		remove := flags.Int("remove", -1, "`index` of the entry to remove")
		return func(ctx context.Context, env *Env, args []string) error {
			st, err := store.Open(store.Options{Dir: *dir, KeyFile: *keyFile, NoSync: true})
			if err != nil {
				return err
			}
			defer st.Close()
			// The layout of package policy: "audit/e/" and the index, 8 bytes big-endian.
			key := func(i int) []byte { return binary.BigEndian.AppendUint64([]byte("audit/e/"), uint64(i)) }
			if *remove >= 0 {
				return st.Delete(key(*remove))
			}
			old, err := st.Get(key(*change))
			if err != nil {
				return err
			}
			// Blame another org: the entry keeps its form and length.
			changed := bytes.Replace(old, []byte("hospital-a"), []byte("hospital-b"), 1)
			if bytes.Equal(changed, old) {
				return fmt.Errorf("entry %d names no hospital-a", *change)
			}
			return st.Put(key(*change), changed)
		}
	},
}
