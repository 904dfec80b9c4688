package catalog

import pb "github.com/rpstream/rpstream/catalog/catalogpb"

// EachStream calls fn with every stream record, tombstones included, in no
// order, until fn returns false. The records are the catalog's own: fn
// must neither modify nor keep them (Stream gives a copy to keep). It
// spares a caller that looks for a few records among thousands a copy of
// each (Streams).
func (c *Catalog) EachStream(fn func(*pb.Stream) bool) {
	for _, s := range c.streams {
		if !fn(s) {
			return
		}
	}
}
