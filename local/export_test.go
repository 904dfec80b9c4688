package local

import "github.com/rpstream/rpstream/pmem"

// CreateV1On is CreateOn writing a file of format version 1 (entry
// checksums without the epoch), as builds before version 2 did.
func CreateV1On(mem pmem.Memory, opts Options) (*Stream, error) {
	opts.formatVersion = FormatVersion1
	return CreateOn(mem, opts)
}

// SlotsMade is how many window slots a has made so far.
func (a *Appender) SlotsMade() int {
	a.growMu.Lock()
	defer a.growMu.Unlock()
	return int(a.made)
}
