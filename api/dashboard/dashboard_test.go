package dashboard

import (
	"io"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestServesEmbeddedFiles(t *testing.T) {
	srv := httptest.NewServer(Handler())
	defer srv.Close()
	for path, want := range map[string]string{"/": "text/html", "/app.js": "javascript", "/style.css": "text/css"} {
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
	// Nothing is fetched from elsewhere: the page works offline.
	for _, f := range []string{"static/index.html", "static/app.js", "static/style.css"} {
		b, _ := files.ReadFile(f)
		if strings.Contains(string(b), "http://") || strings.Contains(string(b), "https://") {
			if !strings.Contains(string(b), "http://www.w3.org/2000/svg") {
				t.Fatalf("%s refers to an external URL", f)
			}
		}
	}
}

func TestScriptParses(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node not installed")
	}
	out, err := exec.Command(node, "--check", filepath.Join("static", "app.js")).CombinedOutput()
	if err != nil {
		t.Fatalf("app.js: %v\n%s", err, out)
	}
}
