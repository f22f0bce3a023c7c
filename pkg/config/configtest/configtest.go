// Package configtest checks a component's bad-config corpus: every
// testdata/*.bad.yaml starts with "# want: <substring>" and loading it must
// fail with an error containing that substring (as Prometheus' TestBadConfigs).
package configtest

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// BadFiles runs load on every file matching glob as a subtest.
func BadFiles(t *testing.T, glob string, load func(path string) error) {
	t.Helper()
	files, err := filepath.Glob(glob)
	if err != nil || len(files) == 0 {
		t.Fatalf("no bad config files match %s (%v)", glob, err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			want := wantLine(t, f)
			err := load(f)
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("error = %v, want it to contain %q", err, want)
			}
		})
	}
}

func wantLine(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan()
	want, ok := strings.CutPrefix(sc.Text(), "# want: ")
	if !ok || want == "" {
		t.Fatalf("%s: first line must be '# want: <error substring>'", path)
	}
	return want
}
