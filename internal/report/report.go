// Package report writes what fedweave commands measured: JSON reports, and PNG line plots beside
// them, for people who would rather look at a curve than read numbers. Plots use gonum/plot.
package report

import (
	"encoding/json"
	"fmt"
	"image/color"
	"os"
	"path/filepath"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// WriteJSON writes v as indented JSON to path, through a temporary file in the same directory
// so that a reader never sees half a report.
func WriteJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("report: encode: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".report-*")
	if err != nil {
		return fmt.Errorf("report: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("report: write: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("report: write: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("report: %w", err)
	}
	return nil
}

// PlotPath is the PNG that goes beside a JSON report: r.json -> r.png.
func PlotPath(reportPath string) string {
	return strings.TrimSuffix(reportPath, filepath.Ext(reportPath)) + ".png"
}

// Series is one line of a plot.
type Series struct {
	Name string
	X, Y []float64
	// Reference draws the series as a dashed line without points: a baseline to compare with.
	Reference bool
}

// Lines draws the series as a PNG line plot with points, 16 x 10 cm.
func Lines(path, title, xLabel, yLabel string, series ...Series) error {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = xLabel
	p.Y.Label.Text = yLabel
	p.Add(plotter.NewGrid())
	p.Legend.Top = false
	p.Legend.Left = false
	p.Legend.XOffs = -vg.Millimeter
	p.Legend.YOffs = vg.Millimeter
	for i, s := range series {
		if len(s.X) != len(s.Y) {
			return fmt.Errorf("report: series %q has %d x and %d y values", s.Name, len(s.X), len(s.Y))
		}
		pts := make(plotter.XYs, len(s.X))
		for j := range s.X {
			pts[j].X, pts[j].Y = s.X[j], s.Y[j]
		}
		c := palette[i%len(palette)]
		if s.Reference {
			line, err := plotter.NewLine(pts)
			if err != nil {
				return fmt.Errorf("report: series %q: %w", s.Name, err)
			}
			line.Color, line.Width = c, vg.Points(1.2)
			line.Dashes = []vg.Length{vg.Points(5), vg.Points(3)}
			p.Add(line)
			p.Legend.Add(s.Name, line)
			continue
		}
		line, points, err := plotter.NewLinePoints(pts)
		if err != nil {
			return fmt.Errorf("report: series %q: %w", s.Name, err)
		}
		line.Color, points.Color = c, c
		line.Width = vg.Points(1.5)
		p.Add(line, points)
		p.Legend.Add(s.Name, line, points)
	}
	if err := p.Save(16*vg.Centimeter, 10*vg.Centimeter, path); err != nil {
		return fmt.Errorf("report: save plot: %w", err)
	}
	return nil
}

var palette = []color.Color{
	color.RGBA{0x1f, 0x77, 0xb4, 0xff},
	color.RGBA{0xd6, 0x27, 0x28, 0xff},
	color.RGBA{0x2c, 0xa0, 0x2c, 0xff},
	color.RGBA{0xff, 0x7f, 0x0e, 0xff},
	color.RGBA{0x94, 0x67, 0xbd, 0xff},
	color.RGBA{0x8c, 0x56, 0x4b, 0xff},
}
