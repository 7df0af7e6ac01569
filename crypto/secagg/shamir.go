package secagg

import (
	"crypto/rand"
	"strconv"
	"strings"

	"github.com/cloudflare/circl/group"
	"github.com/cloudflare/circl/secretsharing"
)

// Shares are Shamir shares over the scalar field of Ristretto255, at the positions 1 to m of a
// client's holders (itself and its neighbours, in ascending order of cohort index).

// split returns the shares of secret at positions 1 to m, any t of which rebuild it. circl's
// threshold counts the shares that reveal nothing (its New(t) needs t+1 shares), hence t-1.
func split(secret scalar, t, m int) []scalar {
	ss := secretsharing.New(rand.Reader, uint(t-1), secret.s)
	shares := make([]scalar, m)
	id := group.Ristretto255.NewScalar()
	for pos := 1; pos <= m; pos++ {
		shares[pos-1] = scalar{ss.ShareWithID(id.SetUint64(uint64(pos))).Value}
	}
	return shares
}

// lagrange computes the Lagrange coefficients at 0 of sets of positions, once per set: in a
// round without dropouts every secret is rebuilt from the same positions 1 to t.
type lagrange struct {
	inv   []group.Scalar // inv[d] = 1/d
	cache map[string][]group.Scalar
}

// newLagrange prepares the coefficients of sets of positions from 1 to m.
func newLagrange(m int) *lagrange {
	l := &lagrange{inv: make([]group.Scalar, m), cache: make(map[string][]group.Scalar)}
	// Batch inversion of 1..m-1: one inversion and 3(m-1) multiplications.
	if m > 1 {
		prefix := make([]group.Scalar, m)
		prefix[0] = group.Ristretto255.NewScalar().SetUint64(1)
		d := group.Ristretto255.NewScalar()
		for i := 1; i < m; i++ {
			prefix[i] = group.Ristretto255.NewScalar().Mul(prefix[i-1], d.SetUint64(uint64(i)))
		}
		acc := group.Ristretto255.NewScalar().Inv(prefix[m-1])
		for i := m - 1; i >= 1; i-- {
			l.inv[i] = group.Ristretto255.NewScalar().Mul(acc, prefix[i-1])
			acc.Mul(acc, d.SetUint64(uint64(i)))
		}
	}
	return l
}

// coefficients returns λ_p for each p of pos (distinct, from 1 to m):
// λ_p = Π_{q ≠ p} q / (q - p).
func (l *lagrange) coefficients(pos []int) []group.Scalar {
	var key strings.Builder
	for _, p := range pos {
		key.WriteString(strconv.Itoa(p))
		key.WriteByte(',')
	}
	if c, ok := l.cache[key.String()]; ok {
		return c
	}
	c := make([]group.Scalar, len(pos))
	q := group.Ristretto255.NewScalar()
	for i, p := range pos {
		lam := group.Ristretto255.NewScalar().SetUint64(1)
		for _, o := range pos {
			if o == p {
				continue
			}
			lam.Mul(lam, q.SetUint64(uint64(o)))
			if o > p {
				lam.Mul(lam, l.inv[o-p])
			} else {
				lam.Mul(lam, q.Neg(l.inv[p-o]))
			}
		}
		c[i] = lam
	}
	l.cache[key.String()] = c
	return c
}

// rebuild rebuilds a secret from shares at pos with the coefficients of pos.
func (l *lagrange) rebuild(pos []int, shares []scalar) scalar {
	c := l.coefficients(pos)
	sum := group.Ristretto255.NewScalar()
	term := group.Ristretto255.NewScalar()
	for i, s := range shares {
		sum.Add(sum, term.Mul(c[i], s.s))
	}
	term.SetUint64(0)
	return scalar{sum}
}
