package api

// Limits of the client port's gRPC transport, the same at the node that
// serves it (node) and at the clients that call it (client).
const (
	// MaxMessageSize is the largest gRPC message either side sends or
	// receives: entries larger than about this are refused
	// (ResourceExhausted) even in streams whose regions could hold them.
	MaxMessageSize = 64 << 20

	// StreamWindow and ConnWindow are the HTTP/2 flow-control windows of
	// a call and of a connection. Fixed windows turn off gRPC's
	// bandwidth-delay estimator, which otherwise answers a connection's
	// first data frame after each of its pings with a window update and a
	// ping of its own: with one append in flight per connection
	// (independent clients) that was one more write and one more read per
	// append on each side, about as many system calls as the appends
	// themselves. They are large enough that loopback and LAN links are
	// never window-bound for entries up to MaxMessageSize.
	StreamWindow = 8 << 20
	ConnWindow   = 32 << 20
)
