package progress

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"
)

// fixClock makes every plain bar of the test take 1.5s.
func fixClock(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	calls := 0
	now = func() time.Time {
		calls++
		if calls == 1 {
			return t0
		}
		return t0.Add(1500 * time.Millisecond)
	}
	t.Cleanup(func() { now = time.Now })
}

func TestPlain(t *testing.T) {
	tests := []struct {
		name  string
		total int
		run   func(b *Bar)
		want  string
	}{
		{
			name:  "one step at a time",
			total: 20,
			run: func(b *Bar) {
				for range 20 {
					b.Add(1)
				}
				b.Finish()
			},
			want: "train: 10% (2/20)\ntrain: 20% (4/20)\ntrain: 30% (6/20)\ntrain: 40% (8/20)\n" +
				"train: 50% (10/20)\ntrain: 60% (12/20)\ntrain: 70% (14/20)\ntrain: 80% (16/20)\n" +
				"train: 90% (18/20)\ntrain: 100% (20/20) in 1.5s\n",
		},
		{
			name:  "big jumps write one line",
			total: 10,
			run: func(b *Bar) {
				b.Add(7)
				b.Describe("train loss 0.52")
				b.Add(1)
				b.Finish()
			},
			want: "train: 70% (7/10)\ntrain loss 0.52: 80% (8/10)\ntrain loss 0.52: 80% (8/10) in 1.5s\n",
		},
		{
			name:  "reaching the total writes the final line once",
			total: 3,
			run: func(b *Bar) {
				b.Add(5)
				b.Add(1)
				b.Finish()
				b.Finish()
			},
			want: "train: 100% (5/3) in 1.5s\n",
		},
		{
			name:  "many small steps stay within ten lines",
			total: 10000,
			run: func(b *Bar) {
				for range 10000 {
					b.Add(1)
				}
				b.Finish()
			},
		},
		{
			name:  "unknown total writes only the final line",
			total: 0,
			run: func(b *Bar) {
				b.Add(3)
				b.Add(4)
				b.Finish()
			},
			want: "train: 7 in 1.5s\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fixClock(t)
			var out bytes.Buffer
			tt.run(New(&out, tt.total, "train"))
			got := out.String()
			if strings.Contains(got, "\r") || strings.Contains(got, "\x1b") {
				t.Errorf("plain output has terminal control characters: %q", got)
			}
			if lines := strings.Count(got, "\n"); lines > 10 {
				t.Errorf("plain output has %d lines, want at most 10", lines)
			}
			if tt.want != "" && got != tt.want {
				t.Errorf("output:\n%s\nwant:\n%s", got, tt.want)
			}
		})
	}
}

func TestNoDescription(t *testing.T) {
	fixClock(t)
	var out bytes.Buffer
	b := New(&out, 2, "")
	b.Add(1)
	b.Finish()
	if got, want := out.String(), "50% (1/2)\n50% (1/2) in 1.5s\n"; got != want {
		t.Errorf("output %q, want %q", got, want)
	}
}

func TestTerminal(t *testing.T) {
	for _, total := range []int{10, 0} {
		var out bytes.Buffer
		b := newBar(&out, total, "epoch", true)
		b.Add(4)
		b.Describe("epoch 2")
		b.Add(20) // past the total: drawn as full, no error
		b.Finish()
		b.Add(1)
		got := out.String()
		if !strings.Contains(got, "\r") || !strings.HasSuffix(got, "\n") || !strings.Contains(got, "epoch 2") {
			t.Errorf("total %d: terminal output %q, want redrawn frames with the description, ending in a newline", total, got)
		}
	}
}

func TestConcurrent(t *testing.T) {
	var out bytes.Buffer
	b := New(&out, 800, "rounds")
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				b.Add(1)
			}
		})
	}
	wg.Wait()
	b.Finish()
	if !strings.Contains(out.String(), "rounds: 100% (800/800)") {
		t.Errorf("output %q lacks the final line", out.String())
	}
}
