package server

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/fedweave/fedweave/dataset"
	"github.com/fedweave/fedweave/internal/store"
	"github.com/fedweave/fedweave/models"
)

// Checkpoint is a committed model of a task as read from a server's store: what prediction
// without a server needs (`fedweave predict --dir`).
type Checkpoint struct {
	Task       string
	Round      uint64
	Spec       models.Spec
	LayoutHash string
	Params     []float32
	// Schema names the model's classes and tabular fields (see TaskConfig.Classes) and gives
	// its image size: what dataset.DecodeRecord checks a record against.
	Schema dataset.Schema
}

// Errors of OpenCheckpoint.
var (
	// ErrNoModel means the task has no committed round that may be served.
	ErrNoModel = errors.New("server: no committed model")
	// ErrTainted means the model asked for is tainted (built with data whose erasure was
	// requested): it is never served.
	ErrTainted = errors.New("server: the model is tainted and is never served")
)

// OpenCheckpoint reads a committed model from the server store in dir, opened read-only with
// the master key in keyFile, while no server has it open. task "" means the store's only
// task; round 0 means the latest committed round whose model is not tainted. A tainted round
// is refused with ErrTainted. The store is closed before OpenCheckpoint returns.
func OpenCheckpoint(dir, keyFile, task string, round uint64) (*Checkpoint, error) {
	st, err := store.Open(store.Options{Dir: dir, KeyFile: keyFile, ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	defer st.Close()
	if task == "" {
		var tasks []string
		err := st.Scan([]byte("task/"), func(k, _ []byte) error {
			if name, ok := strings.CutSuffix(strings.TrimPrefix(string(k), "task/"), "/meta"); ok && !strings.Contains(name, "/") {
				tasks = append(tasks, name)
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("server: %w", err)
		}
		if len(tasks) != 1 {
			return nil, fmt.Errorf("server: the store holds %d tasks (%s): name one", len(tasks), strings.Join(tasks, ", "))
		}
		task = tasks[0]
	}
	var meta taskMeta
	found, err := loadJSON(st, keyMeta(task), &meta)
	if err != nil {
		return nil, fmt.Errorf("server: read task %q: %w", task, err)
	}
	if !found {
		return nil, fmt.Errorf("server: no task %q in the store", task)
	}
	c := &Checkpoint{Task: task, LayoutHash: meta.LayoutHash}
	if err := json.Unmarshal(meta.Spec, &c.Spec); err != nil {
		return nil, fmt.Errorf("server: task %q: model spec: %w", task, err)
	}
	tainted, err := loadTainted(st, task)
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	var committed []uint64
	err = st.Scan(prefixRounds(task), func(_, v []byte) error {
		var r RoundRecord
		if err := json.Unmarshal(v, &r); err != nil {
			return err
		}
		if r.Committed {
			committed = append(committed, r.Round)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("server: read the rounds of task %q: %w", task, err)
	}
	switch {
	case round == 0:
		for i := len(committed) - 1; i >= 0 && round == 0; i-- {
			if !tainted[committed[i]] {
				round = committed[i]
			}
		}
		if round == 0 {
			return nil, fmt.Errorf("%w of task %q that may be served", ErrNoModel, task)
		}
	case tainted[round]:
		return nil, fmt.Errorf("%w: %s", ErrTainted, modelName(task, round))
	}
	m, err := models.New(c.Spec, 0)
	if err != nil {
		return nil, fmt.Errorf("server: task %q: %w", task, err)
	}
	if m.LayoutHash() != meta.LayoutHash {
		return nil, fmt.Errorf("server: task %q was made for another model layout", task)
	}
	var hash [32]byte
	raw, _ := hex.DecodeString(meta.LayoutHash)
	copy(hash[:], raw)
	ring, err := offlineKeyring(keyFile) // checkpoints are sealed (keys.go)
	if err != nil {
		return nil, err
	}
	b, err := checkpointBytes(st, ring, task, round)
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("%w of task %q at round %d", ErrNoModel, task, round)
	}
	if err != nil {
		return nil, fmt.Errorf("server: read checkpoint %d: %w", round, err)
	}
	if c.Params, _, err = decodeCheckpoint(b, hash, m.NumParams()); err != nil {
		return nil, fmt.Errorf("server: checkpoint %d: %w", round, err)
	}
	var names taskNames
	if _, err := loadJSON(st, keyNames(task), &names); err != nil {
		return nil, fmt.Errorf("server: read the task's names: %w", err)
	}
	c.Round, c.Schema = round, names.schema(&c.Spec)
	return c, nil
}

// Model builds the checkpoint's model.
func (c *Checkpoint) Model() (*models.Model, error) {
	m, err := models.New(c.Spec, 0)
	if err != nil {
		return nil, err
	}
	if err := m.SetParams(c.Params, c.LayoutHash); err != nil {
		return nil, err
	}
	return m, nil
}
