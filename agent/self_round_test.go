package agent

import (
	"testing"
	"time"

	"github.com/monitorhq/monitor/pkg/storage"
)

// The agent's own timings are sent with as many decimals as they mean, so
// the compact layout stores them as short decimals, not as noisy floats.
func TestSecondsAtIsAShortDecimal(t *testing.T) {
	for _, tc := range []struct {
		d        time.Duration
		decimals int
		want     float64
	}{
		{1234567891 * time.Nanosecond, 5, 1.23457},
		{1234567891 * time.Nanosecond, 6, 1.234568},
		{4 * time.Microsecond, 5, 0},
		{6 * time.Microsecond, 5, 0.00001},
		{3*time.Hour + 7*time.Nanosecond, 6, 10800},
	} {
		got := secondsAt(tc.d, tc.decimals)
		if got != tc.want {
			t.Errorf("secondsAt(%s, %d) = %v, want %v", tc.d, tc.decimals, got, tc.want)
		}
		if _, ok := storage.DecimalAt(got, tc.decimals); !ok {
			t.Errorf("secondsAt(%s, %d) = %v is not a decimal with %d digits", tc.d, tc.decimals, got, tc.decimals)
		}
	}
}
