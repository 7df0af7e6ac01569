// Package progress shows the progress of a long CLI job (training epochs, federation rounds) on
// a terminal without filling logs with control characters.
//
// Start with [New]. On a terminal, a [Bar] draws a live bar with
// github.com/schollz/progressbar/v3, redrawn in place with carriage returns. Anywhere else (a
// pipe, a file, a CI log, a bytes.Buffer in a test) it writes plain lines instead: at most one
// per 10 % step of the total, and one final line with the count and the elapsed time, so a log
// of a 10,000-step run holds at most 10 lines of it.
//
// Progress goes to stderr by convention (env.Stderr in internal/cli); stdout is for results.
package progress

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// now is the clock of plain output; tests replace it.
var now = time.Now

// A Bar tracks the progress of one job. Its methods are safe for concurrent use.
type Bar struct {
	mu    sync.Mutex
	tty   *progressbar.ProgressBar // nil when w is not a terminal
	w     io.Writer
	total int
	n     int
	desc  string
	step  int // last 10 % step written as a line, 0..9
	start time.Time
	done  bool // the final line is written; nothing more will be
}

// New returns a bar for a job of total steps, labelled desc, that writes to w. w is a terminal
// when it is an *os.File that term.IsTerminal accepts; any other writer gets plain lines. A total
// of 0 or less means the size is unknown: a terminal shows a spinner, and plain output is only
// the final line. New(io.Discard, ...) is a bar that shows nothing.
//
// Call [Bar.Finish] when the job ends, also when it ends early.
func New(w io.Writer, total int, desc string) *Bar {
	return newBar(w, total, desc, isTerminal(w))
}

// OnlyTerminal returns w when it is a terminal and io.Discard otherwise: for a command that
// prints its own line per round or epoch, so that a log gets those lines and no bar.
func OnlyTerminal(w io.Writer) io.Writer {
	if isTerminal(w) {
		return w
	}
	return io.Discard
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func newBar(w io.Writer, total int, desc string, tty bool) *Bar {
	b := &Bar{w: w, total: total, desc: desc, start: now()}
	if tty {
		max := total
		if max <= 0 {
			max = -1 // progressbar's spinner for an unknown size
		}
		b.tty = progressbar.NewOptions(max,
			progressbar.OptionSetWriter(w),
			progressbar.OptionSetDescription(desc),
			progressbar.OptionSetWidth(30),
			progressbar.OptionShowCount(),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionShowElapsedTimeOnFinish(),
			progressbar.OptionOnCompletion(func() { fmt.Fprintln(w) }),
		)
	}
	return b
}

// Add records n more steps done. Steps beyond the total are counted but not drawn past 100 %.
func (b *Bar) Add(n int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done {
		return
	}
	prev := b.n
	b.n += n
	if b.tty != nil {
		if b.total > 0 {
			n = min(b.n, b.total) - min(prev, b.total) // progressbar refuses to pass its max
		}
		if n != 0 {
			b.tty.Add(n)
		}
		return
	}
	if b.total <= 0 {
		return
	}
	if b.n >= b.total {
		b.final()
		return
	}
	if step := b.n * 10 / b.total; step > b.step {
		b.step = step
		fmt.Fprintf(b.w, "%s%d%% (%d/%d)\n", b.prefix(), step*10, b.n, b.total)
	}
}

// Describe changes the label, for instance to show the latest loss. On a terminal it shows at
// once; in plain output it shows on the next line written.
func (b *Bar) Describe(desc string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.desc = desc
	if b.tty != nil && !b.done {
		b.tty.Describe(desc)
	}
}

// Finish ends the bar: a terminal bar is filled and ends its line; plain output gets its final
// line, "<desc>: <percent> (<count>/<total>) in <elapsed>", unless reaching the total already
// wrote it. Calls after the first, and Add and Describe after Finish, do nothing.
func (b *Bar) Finish() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done {
		return
	}
	if b.tty != nil {
		b.tty.Finish()
		b.done = true
		return
	}
	b.final()
}

// final writes the last plain line. b.mu must be held.
func (b *Bar) final() {
	b.done = true
	elapsed := now().Sub(b.start)
	if elapsed < time.Second {
		elapsed = elapsed.Round(time.Millisecond)
	} else {
		elapsed = elapsed.Round(100 * time.Millisecond)
	}
	if b.total <= 0 {
		fmt.Fprintf(b.w, "%s%d in %v\n", b.prefix(), b.n, elapsed)
		return
	}
	pct := min(b.n*100/b.total, 100)
	fmt.Fprintf(b.w, "%s%d%% (%d/%d) in %v\n", b.prefix(), pct, b.n, b.total, elapsed)
}

func (b *Bar) prefix() string {
	if b.desc == "" {
		return ""
	}
	return b.desc + ": "
}
