package api

import (
	"bytes"
	"embed"
	"fmt"
	"html/template"
	"io/fs"
	"net"
	"net/http"
	"strings"
	"time"
)

// The page at / is the dashboard built from web/ (make ui: npm ci and
// esbuild write ui/dist/index.html, app.js and style.css, which are not
// committed). A binary built without them — `go build` on a machine
// without Node.js — embeds the committed fallback instead: ui/index.html,
// app.js and style.css, the minimal host list with a note saying how to
// build the dashboard. Both are served at the same paths (/, /ui/app.js,
// /ui/style.css) and both index pages are templates of the refresh
// interval.
//
//go:embed ui
var uiFiles embed.FS

var (
	indexHTML string
	appJS     []byte
	styleCSS  []byte
)

func init() {
	dir := "ui"
	if _, err := fs.Stat(uiFiles, "ui/dist/index.html"); err == nil {
		dir = "ui/dist"
	}
	read := func(name string) []byte {
		b, err := uiFiles.ReadFile(dir + "/" + name)
		if err != nil {
			panic(fmt.Sprintf("embedded page: %v", err)) // the files are embedded at build time
		}
		return b
	}
	indexHTML, appJS, styleCSS = string(read("index.html")), read("app.js"), read("style.css")
}

// pageCSP allows the page only its own script, style and API; pageCSPFor
// adds the page's own host on any port over https to connect-src, for the
// WebTransport session on the QUIC port.
const pageCSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// pageCSPFor returns the page's CSP for a request to host (the Host
// header): connect-src also allows https://HOSTNAME:* when the name is a
// plain DNS name or IP address, else the CSP stays 'self' only.
func pageCSPFor(host string) string {
	name := host
	if h, _, err := net.SplitHostPort(host); err == nil {
		name = h
	}
	if name == "" || len(name) > 253 {
		return pageCSP
	}
	if ip := net.ParseIP(name); ip != nil {
		if ip.To4() == nil {
			name = "[" + name + "]"
		}
	} else {
		for _, c := range name {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-') {
				return pageCSP
			}
		}
	}
	return strings.Replace(pageCSP, "connect-src 'self'", "connect-src 'self' https://"+name+":*", 1)
}

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

func (a *API) index(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", pageCSPFor(r.Host))
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
