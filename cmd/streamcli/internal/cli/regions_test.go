package cli

import (
	"bytes"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/rpstream/rpstream/local"
)

// TestReadRegions checks ls's reading of region headers against the
// writer's own Regions.
func TestReadRegions(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.stream")
	w, err := local.Create(path, local.Options{RegionSize: 16 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for i := 0; i < 300; i++ {
		if _, err := w.Append(bytes.Repeat([]byte{'x'}, i*7%500)); err != nil {
			t.Fatal(err)
		}
		if i == 150 {
			if _, err := w.Trim(60); err != nil {
				t.Fatal(err)
			}
		}
	}
	want := w.Regions()
	got, err := readRegions(path, w.RegionSize(), w.StreamID(), w.Committed())
	if err != nil {
		t.Fatal(err)
	}
	if len(want) < 3 || fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", want) {
		t.Errorf("readRegions:\n%+v\nRegions:\n%+v", got, want)
	}
}
