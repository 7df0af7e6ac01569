package dp_test

import (
	"fmt"

	"github.com/fedweave/fedweave/crypto/dp"
)

// Example charges a partner for 60 epochs of DP-SGD on 60000 examples, batch 256, noise
// multiplier 1.12, and reports epsilon at delta 1e-5.
func Example() {
	acc, _ := dp.NewAccountant(nil, 1e-5)
	rdp, _ := dp.SampledGaussianRDP(256.0/60000, 1.12, 14063, acc.Orders())
	eps, _ := acc.Charge("hospital-a", rdp, 10)
	fmt.Printf("epsilon %.2f at delta %g\n", eps, acc.Delta())
	// Output: epsilon 2.92 at delta 1e-05
}
