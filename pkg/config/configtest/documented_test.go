package configtest

import (
	"strings"
	"testing"
	"time"

	"github.com/monitorhq/monitor/pkg/config"
)

type exampleConfig struct {
	Listen   string            `yaml:"listen"`
	HostID   string            `yaml:"host_id"`
	Timeout  config.Duration   `yaml:"timeout"`
	Started  time.Time         `yaml:"started"`
	Labels   map[string]string `yaml:"labels"`
	Internal string            `yaml:"-"`
	Auth     struct {
		Issuer   string `yaml:"issuer"`
		Audience string `yaml:"audience"`
		Users    []struct {
			Name string `yaml:"username"`
			Hash string `yaml:"password_hash"`
		} `yaml:"users"`
	} `yaml:"auth"`
}

func TestUndocumented(t *testing.T) {
	const good = `# Header of the file.

# Where to listen.
listen: ":1"
# The host id, commented out: it defaults to the hostname.
# host_id: web-1
timeout: 5s # how long to wait
# When it started.
started: 2026-01-01T00:00:00Z
# Free-form labels.
labels: {}
# Login.
auth:
  # issuer and audience of the tokens.
  issuer: a
  audience: b
  # Accounts, e.g.
  #   - username: ann
  #     password_hash: "$2y$..."
  users: []
`
	cases := []struct {
		name string
		yaml string
		want []string // substrings, one per problem, in order
	}{
		{"complete", good, nil},
		{"missing key", strings.Replace(good, "# host_id: web-1\n", "", 1), []string{"key host_id is missing"}},
		{"missing nested key", strings.Replace(good, "  audience: b\n", "", 1), []string{"key auth.audience is missing"}},
		{"undocumented key", strings.Replace(good, "# Where to listen.\n", "", 1), []string{"key listen (line 3) has no comment"}},
		{"group comment must name the key", strings.Replace(good, "issuer and audience", "iss and aud", 1), []string{"key auth.audience (line 16) has no comment"}},
		{"list element key", strings.Replace(good, "  #     password_hash: \"$2y$...\"\n", "", 1), []string{"key auth.users[].password_hash is missing"}},
		{"list element key in an entry", strings.Replace(good, "  users: []\n", "  users:\n    - password_hash: x\n", 1), nil},
		{"block without its keys", strings.Replace(good, "  issuer: a\n  audience: b\n  # Accounts", "  # Accounts", 1), []string{"key auth.issuer is missing", "key auth.audience is missing"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := Undocumented([]byte(c.yaml), &exampleConfig{})
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(c.want) {
				t.Fatalf("problems = %q, want %d like %q", got, len(c.want), c.want)
			}
			for i, w := range c.want {
				if !strings.Contains(got[i], w) {
					t.Errorf("problem %d = %q, want it to contain %q", i, got[i], w)
				}
			}
		})
	}
	if _, err := Undocumented([]byte("- a\n- b\n"), exampleConfig{}); err == nil {
		t.Error("a YAML list was accepted as a config file")
	}
}
