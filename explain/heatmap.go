package explain

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"

	"github.com/fedweave/fedweave/dataset"
)

// HeatmapSide is the side, in pixels, that Heatmap scales an image up to at least.
const HeatmapSide = 256

// Heatmap renders a saliency map over its image as a PNG: the image in gray (the mean of its
// channels), scaled up by a whole factor to at least HeatmapSide pixels a side, with the
// positive saliency laid over it in red, interpolated bilinearly between pixel centres. The
// red's opacity is the saliency's share of the largest value, or of 0.01 (a drop of one point
// of probability) when the largest is smaller, so that a map of noise stays faint; at most 85 %.
// The gray is dimmed to 70 % so that the red shows on bright pixels too.
// Negative saliency (hiding the patch raised v) is not drawn. im must have the map's height and
// width.
func Heatmap(im *dataset.ImageData, s *Saliency) ([]byte, error) {
	if im == nil || s == nil || im.H != s.H || im.W != s.W || len(s.Values) != s.H*s.W || len(im.Pix) != im.C*im.H*im.W {
		return nil, fmt.Errorf("explain: heatmap: the saliency map does not fit the image")
	}
	scale := max(1, (HeatmapSide+max(s.H, s.W)-1)/max(s.H, s.W))
	W, H := s.W*scale, s.H*scale
	top := 0.01
	for _, v := range s.Values {
		top = max(top, v)
	}
	plane := im.H * im.W
	gray := func(x, y int) float64 {
		g := 0.0
		for c := range im.C {
			g += float64(im.Pix[c*plane+y*im.W+x])
		}
		return min(max(g/float64(im.C), 0), 1)
	}
	// sal interpolates the map at a point given in pixel units (pixel centres at k+0.5).
	sal := func(fx, fy float64) float64 {
		fx, fy = fx-0.5, fy-0.5
		x0, y0 := int(math.Floor(fx)), int(math.Floor(fy))
		tx, ty := fx-float64(x0), fy-float64(y0)
		at := func(x, y int) float64 {
			return s.Values[min(max(y, 0), s.H-1)*s.W+min(max(x, 0), s.W-1)]
		}
		return (1-ty)*((1-tx)*at(x0, y0)+tx*at(x0+1, y0)) + ty*((1-tx)*at(x0, y0+1)+tx*at(x0+1, y0+1))
	}
	out := image.NewRGBA(image.Rect(0, 0, W, H))
	for Y := range H {
		for X := range W {
			g := 0.7 * gray(X/scale, Y/scale)
			a := 0.85 * min(max(sal((float64(X)+0.5)/float64(scale), (float64(Y)+0.5)/float64(scale))/top, 0), 1)
			r := (1-a)*g + a
			gb := (1 - a) * g
			out.SetRGBA(X, Y, color.RGBA{R: uint8(math.Round(255 * r)), G: uint8(math.Round(255 * gb)), B: uint8(math.Round(255 * gb)), A: 255})
		}
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, out); err != nil {
		return nil, fmt.Errorf("explain: heatmap: %w", err)
	}
	return buf.Bytes(), nil
}
