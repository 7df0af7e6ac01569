package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"sync"

	"github.com/fedweave/fedweave/crypto/dp"
	"github.com/fedweave/fedweave/internal/store"
)

// Privacy units a ledger keeps apart: what one guarantee protects.
const (
	// UnitRecord: one record (one data subject's row) of this partner; spent by DP-SGD.
	UnitRecord = "record"
	// UnitPartner: this partner's whole contribution; spent by distributed noise.
	UnitPartner = "partner"
)

// ledgerSecret is the name of the ledger in the client's store (Store.PutSecret).
const ledgerSecret = "dp/ledger"

// A Ledger is a partner's own account of the privacy it has spent: for every task and unit,
// the Rényi-DP curve of every update it sent, computed by the client from the round's
// parameters (it does not take the server's word for epsilon), composed by addition across
// rounds and across tasks. With a Store it is kept sealed in it and survives restarts; every
// client of a process on one Store shares one Ledger (OpenLedger returns it), so a partner has
// one budget over all its tasks, and Charge checks the budget and adds in one step.
//
// The partner unit is charged as if only the secagg threshold of the cohort, less the partner
// itself, had added noise: the fewest other inputs the server can unmask with. The cohort size
// and threshold come from the round's settings, so this assumes the honest-but-curious server
// of the secagg package's threat model. A round without DP-SGD but with distributed noise
// charges the record unit the partner curve: one record changes one partner's contribution.
//
// Safe for concurrent use.
type Ledger struct {
	mu      sync.Mutex
	st      *Store
	orders  []float64
	entries map[string]*LedgerEntry // by unit + "\x00" + task
}

// LedgerEntry is what one task spent in one unit.
type LedgerEntry struct {
	Task   string    `json:"task"`
	Unit   string    `json:"unit"`
	Rounds int       `json:"rounds"` // updates sent
	RDP    []float64 `json:"rdp"`    // at the ledger's orders
}

type ledgerFile struct {
	Orders  []float64      `json:"orders"`
	Entries []*LedgerEntry `json:"entries"`
}

// NewLedger returns an empty ledger held in memory only.
func NewLedger() *Ledger {
	return &Ledger{orders: dp.DefaultOrders, entries: map[string]*LedgerEntry{}}
}

// ledgers holds the Ledger of every open Store, so that clients sharing a Store share it.
var ledgers sync.Map // *Store -> *Ledger

// OpenLedger returns the ledger kept in st, empty if st has none yet: the same Ledger for every
// call on one open Store.
func OpenLedger(st *Store) (*Ledger, error) {
	if l, ok := ledgers.Load(st); ok {
		return l.(*Ledger), nil
	}
	l, err := loadLedger(st)
	if err != nil {
		return nil, err
	}
	actual, _ := ledgers.LoadOrStore(st, l)
	return actual.(*Ledger), nil
}

func loadLedger(st *Store) (*Ledger, error) {
	l := NewLedger()
	l.st = st
	b, err := st.Secret(ledgerSecret)
	if errors.Is(err, store.ErrNotFound) {
		return l, nil
	}
	if err != nil {
		return nil, fmt.Errorf("client: privacy ledger: %w", err)
	}
	var f ledgerFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("client: privacy ledger: %w", err)
	}
	if !slices.Equal(f.Orders, l.orders) {
		return nil, errors.New("client: privacy ledger: kept at other Rényi orders than this version uses")
	}
	for _, e := range f.Entries {
		if len(e.RDP) != len(l.orders) || (e.Unit != UnitRecord && e.Unit != UnitPartner) {
			return nil, fmt.Errorf("client: privacy ledger: malformed entry for task %q", e.Task)
		}
		for _, v := range e.RDP {
			if !(v >= 0) || math.IsInf(v, 0) {
				return nil, fmt.Errorf("client: privacy ledger: malformed entry for task %q", e.Task)
			}
		}
		l.entries[e.Unit+"\x00"+e.Task] = e
	}
	return l, nil
}

// Orders returns the Rényi orders of the ledger's curves; the caller must not change them.
func (l *Ledger) Orders() []float64 { return l.orders }

// total returns the sum of the unit's curves over all tasks, plus more if not nil.
func (l *Ledger) total(unit string, more []float64) []float64 {
	sum := make([]float64, len(l.orders))
	for _, e := range l.entries {
		if e.Unit == unit {
			for i, v := range e.RDP {
				sum[i] += v
			}
		}
	}
	for i, v := range more {
		sum[i] += v
	}
	return sum
}

func (l *Ledger) epsilon(rdp []float64, delta float64) float64 {
	if !slices.ContainsFunc(rdp, func(v float64) bool { return v > 0 }) {
		return 0
	}
	e, _, err := dp.Epsilon(l.orders, rdp, delta)
	if err != nil {
		return math.Inf(1)
	}
	return e
}

// Epsilon returns the unit's epsilon at delta over every task so far.
func (l *Ledger) Epsilon(unit string, delta float64) float64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.epsilon(l.total(unit, nil), delta)
}

// Would returns the unit's epsilon at delta over every task if rdp were charged too.
func (l *Ledger) Would(unit string, rdp []float64, delta float64) float64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.epsilon(l.total(unit, rdp), delta)
}

// ErrBudget is matched by the error of Charge when the charge would take the unit past the
// budget.
var ErrBudget = errors.New("client: privacy budget exceeded")

// Charge adds rdp, one update's curve, to the task's entry in the unit and, with a store,
// writes the ledger through before it returns: the update may only be sent once it is counted.
// With maxEpsilon > 0 it first checks, in the same step, that the unit's epsilon at delta over
// all tasks stays within maxEpsilon, and otherwise charges nothing and returns an error
// matching ErrBudget.
func (l *Ledger) Charge(task, unit string, rdp []float64, maxEpsilon, delta float64) error {
	if len(rdp) != len(l.orders) {
		return errors.New("client: privacy ledger: a curve at other orders")
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if maxEpsilon > 0 {
		if e := l.epsilon(l.total(unit, rdp), delta); !(e <= maxEpsilon) {
			return fmt.Errorf("%w: the update would bring the partner's epsilon per %s to %.4g (delta %g, over all its tasks), over max_epsilon %g",
				ErrBudget, unit, e, delta, maxEpsilon)
		}
	}
	k := unit + "\x00" + task
	e := l.entries[k]
	old := e
	if e == nil {
		e = &LedgerEntry{Task: task, Unit: unit, RDP: make([]float64, len(l.orders))}
	} else {
		e = &LedgerEntry{Task: task, Unit: unit, Rounds: e.Rounds, RDP: slices.Clone(e.RDP)}
	}
	e.Rounds++
	for i, v := range rdp {
		e.RDP[i] += v
	}
	l.entries[k] = e
	if err := l.save(); err != nil {
		if old == nil {
			delete(l.entries, k)
		} else {
			l.entries[k] = old
		}
		return err
	}
	return nil
}

func (l *Ledger) save() error {
	if l.st == nil {
		return nil
	}
	f := ledgerFile{Orders: l.orders}
	for _, e := range l.entries {
		f.Entries = append(f.Entries, e)
	}
	sort.Slice(f.Entries, func(i, j int) bool {
		a, b := f.Entries[i], f.Entries[j]
		return a.Unit < b.Unit || (a.Unit == b.Unit && a.Task < b.Task)
	})
	b, err := json.Marshal(f)
	if err != nil {
		return err
	}
	if err := l.st.PutSecret(ledgerSecret, b); err != nil {
		return fmt.Errorf("client: privacy ledger: %w", err)
	}
	return nil
}

// LedgerLine is one row of a ledger's report.
type LedgerLine struct {
	Task    string  `json:"task"` // "" for the unit's total over all tasks
	Unit    string  `json:"unit"`
	Rounds  int     `json:"rounds"`
	Epsilon float64 `json:"epsilon"`
}

// Report returns, at delta, every task's epsilon per unit and each unit's total over all
// tasks (Task ""), ordered by unit then task, totals first. Totals compose the tasks' curves
// (RDP adds up), which is smaller than the sum of the tasks' epsilons.
func (l *Ledger) Report(delta float64) []LedgerLine {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []LedgerLine
	for _, unit := range []string{UnitRecord, UnitPartner} {
		var lines []LedgerLine
		rounds := 0
		for _, e := range l.entries {
			if e.Unit == unit {
				lines = append(lines, LedgerLine{Task: e.Task, Unit: unit, Rounds: e.Rounds, Epsilon: l.epsilon(e.RDP, delta)})
				rounds += e.Rounds
			}
		}
		if lines == nil {
			continue
		}
		sort.Slice(lines, func(i, j int) bool { return lines[i].Task < lines[j].Task })
		out = append(out, LedgerLine{Unit: unit, Rounds: rounds, Epsilon: l.epsilon(l.total(unit, nil), delta)})
		out = append(out, lines...)
	}
	return out
}
