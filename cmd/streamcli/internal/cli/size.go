package cli

import (
	"flag"

	"github.com/rpstream/rpstream/internal/validate"
)

// Sizes are parsed and written by package validate, as streamnode does,
// so that --region-size 4MiB means the same to both.

func parseSize(s string) (int, error) { return validate.ParseSize(s) }

func formatSize(n int64) string { return validate.FormatSize(n) }

// sizeFlag is a flag.Value holding a size in bytes in *p.
func sizeFlag(p *int) flag.Value { return validate.SizeFlag{P: p} }
