// Package dashboard serves twinmesh's built-in dashboard: static files
// embedded in the binary (no CDN, works offline) that talk to the REST API
// and the WebSocket API with the token the user signs in with: the admin
// token or an access token, whose role and scope decide what it shows
// (GET /api/v1/tokens/self; the server enforces them).
//
// The page is plain scripts, one per part (static/js: core, tree, charts,
// entity, model, grid, alerts, tokens, app), with no build step. model.js
// draws a device's DTDL model (CONTRACT section 12): display names, units,
// typed inputs for writable properties, command forms. One library is
// vendored, uPlot 1.6.32 (static/vendor, MIT, its licence beside it), for
// the time-series charts. The layout is checked in headless Chromium by
// api/node's dashboard tests, which compare element boxes and screenshot
// pixels with what each state should show.
package dashboard

import (
	"embed"
	"io/fs"
	"net/http"
)

//go:embed static
var files embed.FS

// Handler serves the dashboard at the root of the mux it is mounted on.
func Handler() http.Handler {
	sub, err := fs.Sub(files, "static")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	fileServer := http.FileServer(http.FS(sub))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The page holds no secrets; the token lives in sessionStorage.
		w.Header().Set("Cache-Control", "no-cache")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Content-Security-Policy", "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; style-src 'self'")
		fileServer.ServeHTTP(w, r)
	})
}
