package main

import (
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

// The growth plot: two panels against simulated hosts (log scale): the
// broker's CPU per snapshot (with the achieved share of the offered rate
// written at each point), and memory (broker RSS, Redis used_memory).

var (
	colBG    = color.RGBA{255, 255, 255, 255}
	colAxis  = color.RGBA{60, 60, 60, 255}
	colGrid  = color.RGBA{225, 225, 225, 255}
	colText  = color.RGBA{20, 20, 20, 255}
	colLine1 = color.RGBA{31, 119, 180, 255}
	colLine2 = color.RGBA{214, 39, 40, 255}
)

type series struct {
	name string
	col  color.RGBA
	ys   []float64
	tags []string // label written above each point ("" for none)
}

type canvas struct{ img *image.RGBA }

func (c canvas) set(x, y int, col color.RGBA) {
	if image.Pt(x, y).In(c.img.Bounds()) {
		c.img.SetRGBA(x, y, col)
	}
}

func (c canvas) line(x0, y0, x1, y1 int, col color.RGBA, width int) {
	dx, dy := math.Abs(float64(x1-x0)), math.Abs(float64(y1-y0))
	steps := int(max(dx, dy)) + 1
	for i := 0; i <= steps; i++ {
		t := float64(i) / float64(steps)
		x := int(math.Round(float64(x0) + t*float64(x1-x0)))
		y := int(math.Round(float64(y0) + t*float64(y1-y0)))
		for a := -width / 2; a <= width/2; a++ {
			for b := -width / 2; b <= width/2; b++ {
				c.set(x+a, y+b, col)
			}
		}
	}
}

func (c canvas) dot(x, y, r int, col color.RGBA) {
	for a := -r; a <= r; a++ {
		for b := -r; b <= r; b++ {
			if a*a+b*b <= r*r {
				c.set(x+a, y+b, col)
			}
		}
	}
}

// text draws s with its left end at x and baseline at y.
func (c canvas) text(x, y int, s string, col color.RGBA) {
	d := font.Drawer{Dst: c.img, Src: image.NewUniform(col), Face: basicfont.Face7x13, Dot: fixed.P(x, y)}
	d.DrawString(s)
}

func textWidth(s string) int {
	return font.MeasureString(basicfont.Face7x13, s).Round()
}

// panel draws series against xs (log scale) inside r.
func (c canvas) panel(r image.Rectangle, title, yLabel string, xs []float64, ss []series) {
	c.text(r.Min.X+(r.Dx()-textWidth(title))/2, r.Min.Y+14, title, colText)
	plot := image.Rect(r.Min.X+60, r.Min.Y+30, r.Max.X-20, r.Max.Y-50)
	ymax := 0.0
	for _, s := range ss {
		for _, y := range s.ys {
			ymax = max(ymax, y)
		}
	}
	ymax = niceCeil(ymax * 1.15)
	lx0, lx1 := math.Log10(xs[0]), math.Log10(xs[len(xs)-1])
	if lx1 == lx0 {
		lx0, lx1 = lx0-0.5, lx1+0.5
	}
	pad := (lx1 - lx0) * 0.08
	lx0, lx1 = lx0-pad, lx1+pad
	px := func(x float64) int {
		return plot.Min.X + int((math.Log10(x)-lx0)/(lx1-lx0)*float64(plot.Dx()))
	}
	py := func(y float64) int { return plot.Max.Y - int(y/ymax*float64(plot.Dy())) }
	for i := 0; i <= 5; i++ {
		y := ymax * float64(i) / 5
		yy := py(y)
		c.line(plot.Min.X, yy, plot.Max.X, yy, colGrid, 1)
		l := strconv.FormatFloat(math.Round(y*100)/100, 'f', -1, 64)
		c.text(plot.Min.X-6-textWidth(l), yy+4, l, colText)
	}
	for _, x := range xs {
		xx := px(x)
		c.line(xx, plot.Min.Y, xx, plot.Max.Y, colGrid, 1)
		l := fmt.Sprintf("%g", x)
		if x >= 1000 {
			l = fmt.Sprintf("%gk", x/1000)
		}
		c.text(xx-textWidth(l)/2, plot.Max.Y+16, l, colText)
	}
	c.line(plot.Min.X, plot.Max.Y, plot.Max.X, plot.Max.Y, colAxis, 1)
	c.line(plot.Min.X, plot.Min.Y, plot.Min.X, plot.Max.Y, colAxis, 1)
	xl := "simulated hosts (log scale)"
	c.text(plot.Min.X+(plot.Dx()-textWidth(xl))/2, plot.Max.Y+34, xl, colText)
	c.text(r.Min.X+4, r.Min.Y+28, yLabel, colText)
	for k, s := range ss {
		for i := range s.ys {
			if i > 0 {
				c.line(px(xs[i-1]), py(s.ys[i-1]), px(xs[i]), py(s.ys[i]), s.col, 2)
			}
		}
		for i, y := range s.ys {
			c.dot(px(xs[i]), py(y), 4, s.col)
			if i < len(s.tags) && s.tags[i] != "" {
				t := s.tags[i]
				c.text(max(2, px(xs[i])-textWidth(t)/2), py(y)-16-13*k, t, s.col)
			}
		}
		// Legend.
		ly := plot.Min.Y + 12 + 16*k
		c.line(plot.Min.X+10, ly-4, plot.Min.X+30, ly-4, s.col, 2)
		c.text(plot.Min.X+36, ly, s.name, colText)
	}
}

func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

// drawGrowth writes the growth plot as a PNG at path.
func drawGrowth(path string, pts []growthPoint) error {
	const w, h = 1100, 460
	c := canvas{image.NewRGBA(image.Rect(0, 0, w, h))}
	draw.Draw(c.img, c.img.Bounds(), image.NewUniform(colBG), image.Point{}, draw.Src)
	var xs, cpu, rss, redisMB []float64
	var tags []string
	for _, p := range pts {
		xs = append(xs, float64(p.Hosts))
		cpu = append(cpu, p.BrokerCPUUS)
		rss = append(rss, p.BrokerRSSMB)
		redisMB = append(redisMB, p.RedisMB)
		tags = append(tags, fmt.Sprintf("%.0f of %.0f/s", p.AchievedPerS, p.OfferedPerS))
	}
	interval := pts[0].IntervalS
	c.panel(image.Rect(0, 20, w/2, h), fmt.Sprintf("broker CPU per snapshot (hosts every %gs)", interval), "us", xs,
		[]series{{name: "broker CPU us/snapshot (label: achieved of offered)", col: colLine1, ys: cpu, tags: tags}})
	c.panel(image.Rect(w/2, 20, w, h), "memory", "MB", xs,
		[]series{{name: "broker RSS (peak)", col: colLine1, ys: rss}, {name: "Redis used_memory (after the run)", col: colLine2, ys: redisMB}})
	c.text(10, 14, "monitor growth: loadgen -> broker -> one Redis, 50 metrics per snapshot, rollups on (BENCHMARKS.md)", colText)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := png.Encode(f, c.img); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
