//go:build cgo

package topk

import (
	"testing"

	"github.com/monitorhq/monitor/visualization/internal/cpp"
	"github.com/monitorhq/monitor/visualization/topkshm"
)

// TestSegmentLayoutMatchesCpp checks that topk.h's TOPK_SHM_* constants,
// which the C++ writer uses, equal topkshm's, which the reader and the Go
// writer use.
func TestSegmentLayoutMatchesCpp(t *testing.T) {
	for _, c := range []struct {
		name      string
		inC, inGo uint64
	}{
		{"TOPK_SHM_MAGIC", cpp.ShmMagic, topkshm.Magic},
		{"TOPK_SHM_VERSION", uint64(cpp.ShmVersion), topkshm.Version},
		{"TOPK_SHM_HEADER_SIZE", uint64(cpp.ShmHeaderSize), topkshm.HeaderSize},
		{"TOPK_SHM_NAME_WIDTH", uint64(cpp.ShmNameWidth), topkshm.NameWidth},
		{"TOPK_SHM_HOST_WIDTH", uint64(cpp.ShmHostWidth), topkshm.HostWidth},
		{"TOPK_SHM_SLOT_HEAD", uint64(cpp.ShmSlotHead), topkshm.SlotHead},
		{"TOPK_SHM_ENTRY_SIZE", uint64(cpp.ShmEntrySize), topkshm.EntrySize},
	} {
		if c.inC != c.inGo {
			t.Errorf("%s = %#x in topk.h, %#x in topkshm", c.name, c.inC, c.inGo)
		}
	}
}
