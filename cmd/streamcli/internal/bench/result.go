package bench

import (
	"fmt"
	"io"
	"math"
	"slices"
)

// Result is the outcome of a run. Its JSON form is what "bench --json"
// prints; fields are only ever added.
type Result struct {
	Kind          string  `json:"kind"`
	Count         int     `json:"count"`
	Size          int     `json:"size"`
	Writers       int     `json:"writers"`
	Dir           string  `json:"dir"`
	Sync          bool    `json:"sync"`
	RegionSize    int     `json:"region_size"`
	Mode          string  `json:"mode"`
	ModeDetail    string  `json:"mode_detail,omitempty"`
	Seconds       float64 `json:"seconds"`
	EntriesPerSec float64 `json:"entries_per_sec"`
	MBPerSec      float64 `json:"mb_per_sec"` // payload bytes, 10^6 per MB
	P50us         float64 `json:"p50_us"`
	P99us         float64 `json:"p99_us"`
	P999us        float64 `json:"p999_us"`
	MaxUs         float64 `json:"max_us"`
	Clock         string  `json:"latency_clock,omitempty"` // tsc or nanotime
	// PreparedRegions were allocated before the clock started (0: the
	// run allocated every region as it went, page faults included).
	PreparedRegions int `json:"prepared_regions"`
	// Mover is the engine that copied the payloads (sync, cpu, dsa),
	// MoverDetail what it is and why it was chosen (its Describe), or
	// "none: ..." when the writers appended synchronously without one.
	Mover       string `json:"mover"`
	MoverDetail string `json:"mover_detail"`
	// InFlight is the appends each writer kept in flight.
	InFlight int `json:"inflight"`
	// Fallbacks counts copies the mover failed and the CPU redid.
	Fallbacks uint64 `json:"fallbacks,omitempty"`
}

// fill computes rates and percentiles from the per-writer latencies, in
// clock ticks of nsPerTick nanoseconds.
func (r *Result) fill(lat [][]uint32, nsPerTick float64) {
	var all []uint32
	for _, l := range lat {
		all = append(all, l...)
	}
	slices.Sort(all)
	pct := func(p float64) float64 {
		if len(all) == 0 {
			return 0
		}
		k := int(p * float64(len(all)))
		if k >= len(all) {
			k = len(all) - 1
		}
		return round3(float64(all[k]) * nsPerTick / 1e3)
	}
	r.P50us, r.P99us, r.P999us, r.MaxUs = pct(0.50), pct(0.99), pct(0.999), pct(1)
	if r.Seconds > 0 {
		r.EntriesPerSec = math.Round(float64(r.Count) / r.Seconds)
		r.MBPerSec = round3(float64(r.Count) * float64(r.Size) / r.Seconds / 1e6)
	}
}

func round3(x float64) float64 { return math.Round(x*1000) / 1000 }

// Print writes the result for a person to read.
func (r *Result) Print(w io.Writer) {
	sync := "each append durable before it returns"
	if !r.Sync {
		sync = "appends not synced one by one; one sync at the end"
	}
	fmt.Fprintf(w, "bench %s: %d entries of %d bytes, %d writer(s), region size %d bytes\n", r.Kind, r.Count, r.Size, r.Writers, r.RegionSize)
	fmt.Fprintf(w, "  directory   %s\n", r.Dir)
	if r.ModeDetail != "" {
		fmt.Fprintf(w, "  persistence %s\n", r.ModeDetail)
	} else {
		fmt.Fprintf(w, "  persistence %s\n", r.Mode)
	}
	fmt.Fprintf(w, "  durability  %s\n", sync)
	fmt.Fprintf(w, "  mover       %s; %d append(s) in flight per writer\n", r.MoverDetail, r.InFlight)
	if r.Fallbacks > 0 {
		fmt.Fprintf(w, "  fallbacks   %d copies failed by the mover and redone on the CPU\n", r.Fallbacks)
	}
	if r.PreparedRegions > 0 {
		fmt.Fprintf(w, "  regions     %d prepared before timing (--prepare=false to time their allocation too)\n", r.PreparedRegions)
	} else {
		fmt.Fprintf(w, "  regions     allocated while appending (first touch of every page included)\n")
	}
	fmt.Fprintf(w, "  time        %.3f s\n", r.Seconds)
	fmt.Fprintf(w, "  throughput  %.0f entries/s, %.1f MB/s\n", r.EntriesPerSec, r.MBPerSec)
	if r.P50us == 0 {
		fmt.Fprintf(w, "  latency     not measured (--latency=false)\n")
		return
	}
	fmt.Fprintf(w, "  latency     p50 %.2f us, p99 %.2f us, p99.9 %.2f us, max %.0f us\n", r.P50us, r.P99us, r.P999us, r.MaxUs)
}
