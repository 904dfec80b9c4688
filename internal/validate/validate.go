// Package validate holds the checks of what people type that more than
// one program makes: stream and node names, byte sizes, replica counts.
// streamcli (in embedded and in node mode), streamnode, the node and the
// catalog call these same functions, so that a value one refuses every
// other refuses too, in the same words, and one accepts they all accept.
//
// The package imports nothing of rpstream: the catalog, which must stay
// pure, and the commands both depend on it.
package validate

import (
	"fmt"
	"strconv"
	"strings"
)

// MaxNameLen is the longest stream or node name, in bytes.
const MaxNameLen = 128

// Name reports whether name is 1 to MaxNameLen bytes of [A-Za-z0-9._-]
// starting with a letter or digit: safe as a file name on any file
// system, never hidden (".x"), never taken for a flag ("-x"). Streams and
// nodes are named so.
func Name(name string) error {
	if name == "" || len(name) > MaxNameLen {
		return fmt.Errorf("%q: want 1 to %d bytes", name, MaxNameLen)
	}
	for i := 0; i < len(name); i++ {
		ch := name[i]
		alnum := ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9'
		if !alnum && (i == 0 || ch != '.' && ch != '_' && ch != '-') {
			return fmt.Errorf("%q: want [A-Za-z0-9._-], starting with a letter or digit", name)
		}
	}
	return nil
}

// NameRule says in words what Name accepts, for messages and help.
const NameRule = "1 to 128 letters, digits, '.', '_' or '-', starting with a letter or digit"

// MaxReplicas is the most copies a stream may have (its leader's
// included).
const MaxReplicas = 15

// Replicas reports whether n copies of a stream can be asked for.
func Replicas(n int) error {
	if n < 1 || n > MaxReplicas {
		return fmt.Errorf("replicas must be from 1 to %d, not %d", MaxReplicas, n)
	}
	return nil
}

// sizeUnits are the suffixes ParseSize accepts, as powers of 1024: a size
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

// ParseSize parses a byte count such as 4096, 64k, 4MiB or 1m (units are
// powers of 1024, case-insensitive; no fractions, no sign).
func ParseSize(s string) (int, error) {
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

// FormatSize writes n bytes in the largest binary unit that keeps it
// readable: 512B, 64KiB, 4MiB, 1.5GiB. ParseSize reads back what it
// writes when the value is whole.
func FormatSize(n int64) string {
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

// SizeFlag is a flag.Value holding a size in bytes in *P, set by
// ParseSize and shown by FormatSize (empty for 0).
type SizeFlag struct{ P *int }

func (f SizeFlag) String() string {
	if f.P == nil || *f.P == 0 {
		return ""
	}
	return FormatSize(int64(*f.P))
}

func (f SizeFlag) Set(s string) error {
	n, err := ParseSize(s)
	if err != nil {
		return err
	}
	*f.P = n
	return nil
}
