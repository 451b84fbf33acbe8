package node

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/twinmesh/twinmesh/internal/testutil"
)

// page is a headless Chromium tab on the dashboard, with the helpers the
// dashboard tests share: run steps, evaluate, read element boxes, and take
// screenshots whose pixels are checked where the layout puts things.
type page struct {
	t   *testing.T
	ctx context.Context
}

// viewport is the window the layout checks expect.
const viewportW, viewportH = 1280, 900

func newPage(t *testing.T) *page {
	t.Helper()
	chromium := testutil.RequireTool(t, "chromium")
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium), chromedp.NoSandbox,
		chromedp.Flag("disable-gpu", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.Flag("force-device-scale-factor", "1"), chromedp.Flag("hide-scrollbars", true),
		chromedp.NoFirstRun, chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(viewportW, viewportH))
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	ctx, cancelT := context.WithTimeout(ctx, 120*time.Second)
	t.Cleanup(func() { cancelT(); cancel(); cancelA() })
	p := &page{t: t, ctx: ctx}
	p.run("viewport", chromedp.EmulateViewport(viewportW, viewportH))
	return p
}

func (p *page) run(what string, steps ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	if err := chromedp.Do(p.ctx, steps...); err != nil {
		p.t.Fatalf("%s: %v", what, err)
	}
}

func (p *page) eval(expr string, out any) {
	p.t.Helper()
	v, err := chromedp.Run(p.ctx, chromedp.Evaluate[any](expr))
	if err != nil {
		p.t.Fatalf("evaluate %s: %v", expr, err)
	}
	if out == nil {
		return
	}
	b := fmt.Sprint(v)
	switch o := out.(type) {
	case *string:
		*o = b
	case *bool:
		*o, _ = v.(bool)
	case *float64:
		*o, _ = v.(float64)
	}
}

// choose picks value in the select sel, as a user would (a change event).
func (p *page) choose(what, sel, value string) {
	p.t.Helper()
	p.eval(fmt.Sprintf(`(() => { const s = document.querySelector(%q); s.value = %q; s.dispatchEvent(new Event('change')); return s.value; })()`, sel, value), nil)
}

func (p *page) truth(what, expr string) {
	p.t.Helper()
	var ok bool
	p.eval("!!("+expr+")", &ok)
	if !ok {
		p.t.Errorf("%s: %s is false", what, expr)
	}
}

func (p *page) poll(what, expr string, within time.Duration) {
	p.t.Helper()
	if _, err := chromedp.Run(p.ctx, chromedp.Poll[bool]("!!("+expr+")", chromedp.WithPollingTimeout(within))); err != nil {
		p.t.Fatalf("%s: %v (%s)", what, err, expr)
	}
}

// rect is an element's box in CSS pixels of the viewport (the screenshot's
// pixels: the device scale factor is 1).
type rect struct{ X, Y, W, H float64 }

func (r rect) right() float64  { return r.X + r.W }
func (r rect) bottom() float64 { return r.Y + r.H }
func (r rect) empty() bool     { return r.W < 1 || r.H < 1 }
func (r rect) overlaps(o rect) bool {
	return r.X < o.right()-0.5 && o.X < r.right()-0.5 && r.Y < o.bottom()-0.5 && o.Y < r.bottom()-0.5
}
func (r rect) inside(o rect) bool {
	return r.X >= o.X-0.5 && r.Y >= o.Y-0.5 && r.right() <= o.right()+0.5 && r.bottom() <= o.bottom()+0.5
}

// box returns the bounding box of the first element sel matches (empty
// when there is none or it is not rendered).
func (p *page) box(sel string) rect {
	p.t.Helper()
	var r rect
	v, err := chromedp.Run(p.ctx, chromedp.Evaluate[[]float64](fmt.Sprintf(
		`(() => { const e = document.querySelector(%q); if (!e) return [0,0,0,0]; const b = e.getBoundingClientRect(); return [b.x, b.y, b.width, b.height]; })()`, sel)))
	if err != nil {
		p.t.Fatalf("box of %s: %v", sel, err)
	}
	if len(v) == 4 {
		r = rect{v[0], v[1], v[2], v[3]}
	}
	return r
}

// boxes returns the boxes of every element sel matches, by an attribute.
func (p *page) boxes(sel, attr string) map[string]rect {
	p.t.Helper()
	v, err := chromedp.Run(p.ctx, chromedp.Evaluate[map[string][]float64](fmt.Sprintf(
		`Object.fromEntries([...document.querySelectorAll(%q)].map(e => { const b = e.getBoundingClientRect(); return [e.getAttribute(%q), [b.x, b.y, b.width, b.height]]; }))`, sel, attr)))
	if err != nil {
		p.t.Fatalf("boxes of %s: %v", sel, err)
	}
	out := map[string]rect{}
	for k, b := range v {
		out[k] = rect{b[0], b[1], b[2], b[3]}
	}
	return out
}

// shot takes a screenshot of the viewport, saves it as bin/<name>.png for
// people to look at, and returns it for the pixel checks.
func (p *page) shot(name string) image.Image {
	p.t.Helper()
	b, err := chromedp.Run(p.ctx, chromedp.CaptureScreenshot())
	if err != nil {
		p.t.Fatalf("screenshot %s: %v", name, err)
	}
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		p.t.Fatalf("decode screenshot %s: %v", name, err)
	}
	if s := img.Bounds().Size(); s.X != viewportW || s.Y != viewportH {
		p.t.Fatalf("screenshot %s is %v, want %dx%d", name, s, viewportW, viewportH)
	}
	dir := filepath.Join(testutil.RepoRoot(), "bin")
	if os.MkdirAll(dir, 0o755) == nil && os.WriteFile(filepath.Join(dir, name+".png"), b, 0o644) == nil {
		p.t.Logf("screenshot: bin/%s.png", name)
	}
	return img
}

// rgbHex parses "#rrggbb".
func rgbHex(s string) color.RGBA {
	var c color.RGBA
	_, _ = fmt.Sscanf(s, "#%02x%02x%02x", &c.R, &c.G, &c.B)
	c.A = 255
	return c
}

func near(a, b color.Color, tol float64) bool {
	r1, g1, b1, _ := a.RGBA()
	r2, g2, b2, _ := b.RGBA()
	d := math.Abs(float64(r1>>8)-float64(r2>>8)) + math.Abs(float64(g1>>8)-float64(g2>>8)) + math.Abs(float64(b1>>8)-float64(b2>>8))
	return d <= tol
}

// pixelIs checks the colour at (x, y) of a screenshot.
func pixelIs(t *testing.T, img image.Image, what string, x, y float64, want string) {
	t.Helper()
	got := img.At(int(x), int(y))
	if !near(got, rgbHex(want), 24) {
		r, g, b, _ := got.RGBA()
		t.Errorf("%s: pixel (%d,%d) is #%02x%02x%02x, want %s", what, int(x), int(y), r>>8, g>>8, b>>8, want)
	}
}

// regionIs checks that every 4th pixel of r is the colour want: nothing
// is drawn there.
func regionIs(t *testing.T, img image.Image, what string, r rect, want string) {
	t.Helper()
	bad := 0
	for y := int(r.Y); y < int(r.bottom()); y += 4 {
		for x := int(r.X); x < int(r.right()); x += 4 {
			if !near(img.At(x, y), rgbHex(want), 12) {
				bad++
			}
		}
	}
	if bad > 0 {
		t.Errorf("%s: %d sampled pixels of %v are not %s: something is drawn there", what, bad, r, want)
	}
}

// countNear counts the pixels of r within tolerance of want.
func countNear(img image.Image, r rect, want string, tol float64) int {
	n := 0
	for y := int(r.Y); y < int(r.bottom()); y++ {
		for x := int(r.X); x < int(r.right()); x++ {
			if near(img.At(x, y), rgbHex(want), tol) {
				n++
			}
		}
	}
	return n
}

// a11yProblems lists, from the page, visible controls without an
// accessible name and visible text whose contrast with its background is
// under 4.5:1 (WCAG AA for text of this size).
const a11yProblems = `(() => {
  const problems = [];
  const visible = (e) => e.getClientRects().length > 0 && getComputedStyle(e).visibility !== 'hidden';
  const named = (e) => (e.getAttribute('aria-label') || '').trim() || (e.labels && [...e.labels].some((l) => l.textContent.trim())) ||
    (e.getAttribute('aria-labelledby') || '').trim() || (['BUTTON', 'A', 'LI', 'OPTION'].includes(e.tagName) || e.getAttribute('role')) && e.textContent.trim();
  for (const e of document.querySelectorAll('button, input, select, textarea, [role=treeitem], [role=option], a[href]')) {
    if (visible(e) && !named(e)) problems.push('no name: ' + e.outerHTML.slice(0, 80));
  }
  const rgb = (s) => (s.match(/[\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => { const f = (c) => { c /= 255; return c <= 0.03928 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4); }; return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b); };
  const background = (e) => { for (; e; e = e.parentElement) { const c = rgb(getComputedStyle(e).backgroundColor); if (c.length >= 3 && (c.length < 4 || c[3] > 0.5)) return c; } return [255, 255, 255]; };
  for (const e of document.querySelectorAll('body *')) {
    if (!visible(e) || e.closest('svg, canvas, .u-legend')) continue;
    const own = [...e.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    if (!own) continue;
    const s = getComputedStyle(e);
    const fg = rgb(s.color), bg = background(e);
    const alpha = fg.length > 3 ? fg[3] : 1;
    const op = Number(s.opacity);
    if (alpha < 1 || op < 1 || e.closest('button:disabled')) continue;
    const l1 = lum(fg), l2 = lum(bg);
    const ratio = (Math.max(l1, l2) + 0.05) / (Math.min(l1, l2) + 0.05);
    if (ratio < 4.5) problems.push('contrast ' + ratio.toFixed(2) + ': ' + e.tagName + '.' + e.className + ' "' + e.textContent.trim().slice(0, 30) + '"');
  }
  return problems.join('\n');
})()`
