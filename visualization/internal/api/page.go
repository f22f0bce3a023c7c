package api

import (
	"bytes"
	_ "embed"
	"fmt"
	"html/template"
	"net/http"
	"time"
)

// The status page is three small embedded files: no CDN, no build step. The
// Chart.js UI of a later issue replaces it.
var (
	//go:embed ui/index.html
	indexHTML string
	//go:embed ui/app.js
	appJS []byte
	//go:embed ui/style.css
	styleCSS []byte
)

// pageCSP allows the page only its own script, style and API.
const pageCSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// renderPage fills the refresh interval into the page once, at start-up.
func renderPage(refresh time.Duration) ([]byte, error) {
	t, err := template.New("index.html").Parse(indexHTML)
	if err != nil {
		return nil, fmt.Errorf("parse status page: %w", err)
	}
	var buf bytes.Buffer
	err = t.Execute(&buf, struct {
		RefreshMillis int64
		RefreshText   string
	}{refresh.Milliseconds(), refresh.String()})
	if err != nil {
		return nil, fmt.Errorf("render status page: %w", err)
	}
	return buf.Bytes(), nil
}

func (a *API) index(w http.ResponseWriter, _ *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", pageCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-cache")
	_, _ = w.Write(a.page)
}

func asset(body []byte, contentType string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		h := w.Header()
		h.Set("Content-Type", contentType)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Cache-Control", "no-cache")
		_, _ = w.Write(body)
	}
}
