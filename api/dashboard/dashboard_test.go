package dashboard

import (
	"io"
	"io/fs"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func TestServesEmbeddedFiles(t *testing.T) {
	srv := httptest.NewServer(Handler())
	defer srv.Close()
	for path, want := range map[string]string{"/": "text/html", "/js/app.js": "javascript", "/style.css": "text/css",
		"/vendor/uPlot.iife.min.js": "javascript", "/vendor/uPlot.min.css": "text/css"} {
		res, err := srv.Client().Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 || !strings.Contains(res.Header.Get("Content-Type"), want) || len(body) == 0 {
			t.Fatalf("%s: %d %q (%d bytes)", path, res.StatusCode, res.Header.Get("Content-Type"), len(body))
		}
		if !strings.Contains(res.Header.Get("Content-Security-Policy"), "default-src 'self'") {
			t.Fatalf("%s: no CSP", path)
		}
	}
	// Nothing is fetched from elsewhere: the page works offline. Every
	// script and stylesheet the page names is embedded.
	index, _ := files.ReadFile("static/index.html")
	for _, m := range regexp.MustCompile(`(?:src|href)="([^"#]+)"`).FindAllStringSubmatch(string(index), -1) {
		if _, err := fs.Stat(files, "static/"+m[1]); err != nil {
			t.Errorf("index.html names %s: %v", m[1], err)
		}
	}
	_ = fs.WalkDir(files, "static", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasPrefix(path, "static/vendor/") {
			return err
		}
		b, _ := files.ReadFile(path)
		for _, u := range regexp.MustCompile(`https?://[^\s'"]+`).FindAllString(string(b), -1) {
			if u != "http://www.w3.org/2000/svg" {
				t.Errorf("%s refers to an external URL: %s", path, u)
			}
		}
		return nil
	})
}

func TestScriptParses(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node not installed")
	}
	scripts, _ := filepath.Glob(filepath.Join("static", "js", "*.js"))
	if len(scripts) < 5 {
		t.Fatalf("scripts: %v", scripts)
	}
	for _, f := range scripts {
		if out, err := exec.Command(node, "--check", f).CombinedOutput(); err != nil {
			t.Errorf("%s: %v\n%s", f, err, out)
		}
	}
}

// TestFilesStaySmall: no script of our own grows past 600 lines.
func TestFilesStaySmall(t *testing.T) {
	scripts, _ := filepath.Glob(filepath.Join("static", "js", "*.js"))
	for _, f := range append(scripts, filepath.Join("static", "style.css"), filepath.Join("static", "index.html")) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if n := strings.Count(string(b), "\n"); n > 600 {
			t.Errorf("%s has %d lines", f, n)
		}
	}
}
