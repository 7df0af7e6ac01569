package dp

import (
	"errors"
	"fmt"
	"sync"
)

// ErrBudget is returned, wrapped, when a release would take a partner past its budget.
var ErrBudget = errors.New("dp: privacy budget exceeded")

// An Accountant composes RDP curves per partner (across rounds and tasks: RDP adds up, order
// by order) and reports (epsilon, delta). The zero value is not usable; call NewAccountant.
// It is safe for concurrent use.
type Accountant struct {
	orders []float64
	delta  float64
	mu     sync.Mutex
	spent  map[string][]float64
}

// NewAccountant returns an accountant at orders (nil: DefaultOrders) that reports epsilon for
// delta.
func NewAccountant(orders []float64, delta float64) (*Accountant, error) {
	if orders == nil {
		orders = DefaultOrders
	}
	if !(delta > 0 && delta < 1) {
		return nil, fmt.Errorf("dp: delta %v, want between 0 and 1", delta)
	}
	return &Accountant{orders: orders, delta: delta, spent: map[string][]float64{}}, nil
}

// Orders returns the accountant's orders; the caller must not change them.
func (a *Accountant) Orders() []float64 { return a.orders }

// Delta returns the delta epsilons are reported for.
func (a *Accountant) Delta() float64 { return a.delta }

// Epsilon returns the partner's epsilon so far (0 for a partner never charged).
func (a *Accountant) Epsilon(partner string) float64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.epsilonOf(a.spent[partner], nil)
}

// Would returns the partner's epsilon if rdp (a curve at the accountant's orders) were charged.
func (a *Accountant) Would(partner string, rdp []float64) float64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.epsilonOf(a.spent[partner], rdp)
}

// Charge adds rdp to the partner's total unless the resulting epsilon would pass maxEpsilon
// (0: no limit), in which case it charges nothing and returns an error matching ErrBudget.
// It returns the partner's epsilon after the call.
func (a *Accountant) Charge(partner string, rdp []float64, maxEpsilon float64) (float64, error) {
	if len(rdp) != len(a.orders) {
		return 0, errors.New("dp: curve at other orders than the accountant's")
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	cur := a.spent[partner]
	e := a.epsilonOf(cur, rdp)
	if maxEpsilon > 0 && e > maxEpsilon {
		return a.epsilonOf(cur, nil), fmt.Errorf("%w: epsilon would reach %.3g, limit %.3g", ErrBudget, e, maxEpsilon)
	}
	if cur == nil {
		cur = make([]float64, len(a.orders))
	}
	for i := range cur {
		cur[i] += rdp[i]
	}
	a.spent[partner] = cur
	return e, nil
}

func (a *Accountant) epsilonOf(cur, more []float64) float64 {
	if cur == nil && more == nil {
		return 0
	}
	sum := make([]float64, len(a.orders))
	for i := range sum {
		if cur != nil {
			sum[i] += cur[i]
		}
		if more != nil {
			sum[i] += more[i]
		}
	}
	e, _, _ := Epsilon(a.orders, sum, a.delta)
	return e
}
