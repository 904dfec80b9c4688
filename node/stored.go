package node

// StoredEntry reads an entry as a node stored it in a stream with
// envelopes (see envelope.go): the client's data, or skip for an epoch
// marker (a position no reader is shown). For tools that read a node's
// stream files or copies directly (embedded streamcli).
func StoredEntry(stored []byte) (data []byte, skip bool, err error) {
	if isMarker(stored) {
		return nil, true, nil
	}
	data, _, _, _, err = unwrap(stored)
	return data, false, err
}
