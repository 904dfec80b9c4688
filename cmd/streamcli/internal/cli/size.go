package cli

import (
	"fmt"
	"strconv"
	"strings"
)

// sizeUnits are the suffixes parseSize accepts, as powers of 1024: a size
// of storage, so "64k" and "64KiB" both mean 65536 bytes.
var sizeUnits = []struct {
	suffixes []string
	shift    uint
}{
	{[]string{"gib", "gb", "g"}, 30},
	{[]string{"mib", "mb", "m"}, 20},
	{[]string{"kib", "kb", "k"}, 10},
	{[]string{"b", ""}, 0},
}

// parseSize parses a byte count such as 4096, 64k, 4MiB or 1m (units are
// powers of 1024, case-insensitive).
func parseSize(s string) (int, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	for _, u := range sizeUnits {
		for _, suf := range u.suffixes {
			if !strings.HasSuffix(t, suf) {
				continue
			}
			num := strings.TrimSpace(strings.TrimSuffix(t, suf))
			n, err := strconv.ParseUint(num, 10, int(63-u.shift))
			if err != nil || num == "" {
				continue
			}
			return int(n << u.shift), nil
		}
	}
	return 0, fmt.Errorf("invalid size %q (use bytes or a number with k, m or g, such as 4096, 64k, 4MiB)", s)
}

// sizeFlag is a flag.Value holding a size in bytes.
type sizeFlag struct{ n *int }

func (f sizeFlag) String() string {
	if f.n == nil || *f.n == 0 {
		return ""
	}
	return formatSize(int64(*f.n))
}

func (f sizeFlag) Set(s string) error {
	n, err := parseSize(s)
	if err != nil {
		return err
	}
	*f.n = n
	return nil
}

// formatSize writes n bytes in the largest binary unit that keeps it
// readable: 512B, 64KiB, 4MiB, 1.5GiB.
func formatSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	units := []string{"KiB", "MiB", "GiB", "TiB"}
	v := float64(n) / unit
	k := 0
	for v >= unit && k < len(units)-1 {
		v /= unit
		k++
	}
	if v == float64(int64(v)) {
		return fmt.Sprintf("%d%s", int64(v), units[k])
	}
	return fmt.Sprintf("%.1f%s", v, units[k])
}
