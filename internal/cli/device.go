package cli

import (
	"errors"
	"flag"
)

// Devices: CPU is the default and what CI runs. A CUDA build of gorgonia (-tags cuda) is a later
// step; until it lands, asking for cuda fails with a clear message rather than silently running
// on the CPU.

// DeviceFlag defines the --device flag, default "cpu", on fs. Check its value with [CheckDevice]
// before any work starts.
func DeviceFlag(fs *flag.FlagSet) *string {
	return fs.String("device", "cpu", "compute `device`: cpu, or cuda in a build with GPU support")
}

// CheckDevice reports whether this build of fedweave can compute on the named device. It returns
// nil for "cpu"; for "cuda" an error with a hint (this build has no GPU support); for any other
// name a [UsageError].
func CheckDevice(name string) error {
	switch name {
	case "cpu":
		return nil
	case "cuda":
		return Hint(errors.New("this build of fedweave has no GPU support (built without -tags cuda)"),
			"use --device cpu, the default")
	}
	return Hint(Usagef("unknown device %q", name), "use --device cpu, the default (or cuda in a GPU build)")
}
