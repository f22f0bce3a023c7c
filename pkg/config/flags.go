package config

import (
	"flag"
	"fmt"
	"os"
	"strings"
)

// Flags binds command-line flags that override config fields. Bind them
// before fs.Parse, load the YAML file into the same Config, then call Apply:
// a flag the user gave always wins over the file, a flag left out changes
// nothing (so its zero value never clobbers the file).
type Flags struct {
	fs   *flag.FlagSet
	sets map[string]func(string) error
	vals map[string]*string
}

// NewFlags returns a binder on fs.
func NewFlags(fs *flag.FlagSet) *Flags {
	return &Flags{fs: fs, sets: map[string]func(string) error{}, vals: map[string]*string{}}
}

// String registers flag name; set receives its value in Apply.
func (f *Flags) String(name, usage string, set func(string) error) {
	f.vals[name] = f.fs.String(name, "", usage)
	f.sets[name] = set
}

// Apply calls the setter of every flag given on the command line.
func (f *Flags) Apply() error {
	var err error
	f.fs.Visit(func(fl *flag.Flag) {
		set, ok := f.sets[fl.Name]
		if !ok || err != nil {
			return
		}
		if e := set(*f.vals[fl.Name]); e != nil {
			err = fmt.Errorf("flag -%s: %w", fl.Name, e)
		}
	})
	return err
}

// SplitList splits a comma-separated flag value, dropping empty items.
func SplitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// Env returns the first non-empty environment variable of names.
func Env(names ...string) string {
	for _, n := range names {
		if v := os.Getenv(n); v != "" {
			return v
		}
	}
	return ""
}
