package report

import (
	"bytes"
	"fmt"
	"html/template"
	"image/color"
	"math"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgsvg"
)

// series is one line of the trend chart, and its colour in the page's
// legend and tables.
type series struct {
	Count string // the count's name in the run history
	Label string
	Color string // #rrggbb
}

// trendSeries are the trend's lines: writes per direction, opt-outs
// cleared, rejects and failed writes.
var trendSeries = []series{
	{"d365->campaign", "Dynamics → Campaign", "#2563eb"},
	{"campaign->d365", "Campaign → Dynamics", "#0d9488"},
	{"opt_outs_cleared", "opt-outs cleared", "#d97706"},
	{"rejected", "rejected rows", "#7c3aed"},
	{"failed", "failed writes", "#dc2626"},
}

// Sans-serif text: the page's own face when the browser has Liberation,
// close to it when not.
var chartFont = font.Font{Typeface: "Liberation", Variant: "Sans"}

func hexColor(s string) color.Color {
	var r, g, b uint8
	if _, err := fmt.Sscanf(s, "#%02x%02x%02x", &r, &g, &b); err != nil {
		return color.Black
	}
	return color.RGBA{R: r, G: g, B: b, A: 255}
}

var (
	inkColor  = color.RGBA{R: 0x37, G: 0x41, B: 0x51, A: 255}
	gridColor = color.RGBA{R: 0xe5, G: 0xe7, B: 0xeb, A: 255}
)

// newPlot is a plot in the page's style: sans-serif text, grey axes, a
// light horizontal (or vertical) grid, no title (the page has headings).
func newPlot(horizontalGrid bool) *plot.Plot {
	p := plot.New()
	for _, ax := range []*plot.Axis{&p.X, &p.Y} {
		ax.Label.TextStyle.Font = font.From(chartFont, 9)
		ax.Tick.Label.Font = font.From(chartFont, 8)
		ax.Tick.Label.Color = inkColor
		ax.LineStyle.Color = inkColor
		ax.Tick.LineStyle.Color = inkColor
		ax.Tick.Length = vg.Points(3)
	}
	grid := plotter.NewGrid()
	grid.Vertical.Color, grid.Horizontal.Color = gridColor, gridColor
	if horizontalGrid {
		grid.Vertical.Width = 0
	} else {
		grid.Horizontal.Width = 0
	}
	p.Add(grid)
	return p
}

// svg renders a plot as an SVG element to put inline in the page.
func svg(p *plot.Plot, w, h vg.Length) (template.HTML, error) {
	c := vgsvg.New(w, h)
	p.Draw(draw.New(c))
	var b bytes.Buffer
	if _, err := c.WriteTo(&b); err != nil {
		return "", fmt.Errorf("drawing a chart: %w", err)
	}
	s := b.String()
	// Inline in HTML the XML prologue and generator comment are noise.
	if i := strings.Index(s, "<svg"); i >= 0 {
		s = s[i:]
	}
	// gonum/plot escapes every text it draws (html.EscapeString), and the
	// rest is numbers and colours: the markup is safe to put in the page.
	return template.HTML(s), nil //nolint:gosec // see above
}

// intTicks marks whole numbers only: counts have no fractions.
type intTicks struct{}

func (intTicks) Ticks(min, max float64) []plot.Tick {
	var out []plot.Tick
	for _, t := range (plot.DefaultTicks{}).Ticks(min, max) {
		if t.Value != math.Trunc(t.Value) {
			if t.Label == "" {
				continue
			}
			t.Label = ""
		}
		out = append(out, t)
	}
	return out
}

// labelTicks names the positions 0…n-1, every step-th when there are many.
type labelTicks struct {
	labels []string
	step   int
}

func (t labelTicks) Ticks(_, _ float64) []plot.Tick {
	ticks := make([]plot.Tick, 0, len(t.labels))
	for i, l := range t.labels {
		if i%t.step != 0 && i != len(t.labels)-1 {
			l = ""
		}
		ticks = append(ticks, plot.Tick{Value: float64(i), Label: l})
	}
	return ticks
}

// barChart draws one bar per name, in the given colours (one colour for
// all when there is one), horizontal when the names are long.
func barChart(names []string, values []float64, colors []string, horizontal bool, w, h vg.Length) (template.HTML, error) {
	p := newPlot(!horizontal)
	maxV := 0.0
	for _, v := range values {
		maxV = max(maxV, v)
	}
	// One bar chart per colour: gonum/plot colours a chart, not a bar.
	for i, c := range colors {
		vs := make(plotter.Values, len(values))
		for k, v := range values {
			if len(colors) == 1 || k == i {
				vs[k] = v
			}
		}
		bars, err := plotter.NewBarChart(vs, vg.Points(14))
		if err != nil {
			return "", fmt.Errorf("bar chart: %w", err)
		}
		bars.Horizontal = horizontal
		bars.LineStyle.Width = 0
		bars.Color = hexColor(c)
		p.Add(bars)
	}
	valueAxis := &p.Y
	if horizontal {
		valueAxis = &p.X
		p.NominalY(names...)
	} else {
		p.NominalX(names...)
	}
	valueAxis.Min, valueAxis.Max = 0, max(1, maxV*1.08)
	valueAxis.Tick.Marker = intTicks{}
	return svg(p, w, h)
}

// trendChart draws the trend series over the points, one glyph per run.
func trendChart(points []Point, w, h vg.Length) (template.HTML, error) {
	p := newPlot(true)
	labels := make([]string, len(points))
	maxV := 0.0
	layout := "01-02 15:04"
	for i, pt := range points {
		// Runs a minute apart (a rerun by hand) get their seconds too.
		if i > 0 && pt.Started.UTC().Format(layout) == points[i-1].Started.UTC().Format(layout) {
			layout = "01-02 15:04:05"
		}
		for _, s := range trendSeries {
			maxV = max(maxV, float64(pt.Counts[s.Count]))
		}
	}
	for i, pt := range points {
		labels[i] = pt.Started.UTC().Format(layout)
	}
	for _, s := range trendSeries {
		xys := make(plotter.XYs, len(points))
		for i, pt := range points {
			xys[i] = plotter.XY{X: float64(i), Y: float64(pt.Counts[s.Count])}
		}
		line, dots, err := plotter.NewLinePoints(xys)
		if err != nil {
			return "", fmt.Errorf("trend chart: %w", err)
		}
		c := hexColor(s.Color)
		line.Color, line.Width = c, vg.Points(1.5)
		dots.GlyphStyle = draw.GlyphStyle{Color: c, Radius: vg.Points(2.5), Shape: draw.CircleGlyph{}}
		p.Add(line, dots)
	}
	step := 1
	if len(points) > 10 {
		step = (len(points) + 9) / 10
	}
	p.X.Tick.Marker = labelTicks{labels: labels, step: step}
	p.X.Min, p.X.Max = -0.3, float64(max(len(points)-1, 0))+0.3
	p.Y.Min, p.Y.Max = 0, max(1, maxV*1.08)
	p.Y.Tick.Marker = intTicks{}
	return svg(p, w, h)
}
