package controller

import pb "github.com/rpstream/rpstream/catalog/catalogpb"

// EachStream calls fn with every stream record as applied here, in no
// order, until fn returns false, holding the catalog's read lock: fn must
// be quick, must not call the Controller, and must neither modify nor keep
// the records (Stream gives a copy to keep).
func (c *Controller) EachStream(fn func(*pb.Stream) bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	c.cat.EachStream(fn)
}
