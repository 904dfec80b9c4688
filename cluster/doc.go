// Package cluster is rpstream's membership layer: membership and failure
// detection over hashicorp/memberlist (SWIM gossip), each member's
// addresses, role and capacity carried in its memberlist metadata, and
// deterministic replica placement. It is the address book and the failure
// hint; who leads which stream under which epoch is decided by the catalog
// (package catalog), never here.
//
// # Member metadata (format version 1, must never change)
//
// A member's memberlist NodeMeta is at most MaxMetaSize bytes:
//
//	+---------+------+-------+--------------------+----------------+--------------+
//	| version | role | flags | capacity (uvarint) | client (string)| peer (string)|
//	|  1 byte |1 byte|1 byte |     1..10 bytes    |                |              |
//	+---------+------+-------+--------------------+----------------+--------------+
//
// version is 1; role is 1 (RoleNode) or 2 (RoleBackup); flags has one bit,
// 1 = leaving, the others must be 0; varints are minimal; a string is a
// uvarint length (at most MaxAddrLen) and that many bytes, a host:port.
// Nothing may follow the last field. A newer format gets a new version
// byte; ParseMeta rejects versions it does not know (ErrBadMeta), and a
// member whose metadata does not parse is listed with MetaErr set and
// RoleUnknown, and is never chosen by placement.
//
// # Member states
//
// memberlist (v0.7.0) tells join, update and "leave" through its event
// delegate but keeps the state itself (suspect, dead, left) in an unexported
// field, so the Cluster reconstructs it:
//
//   - Alive from NotifyJoin and NotifyUpdate.
//   - Left from NotifyLeave of a member whose last metadata had the leaving
//     flag: Leave publishes that flag (and waits for it to spread) before
//     memberlist's own leave message, as serf does with its leave intent.
//     Dead from NotifyLeave otherwise. The leave message cancels what is
//     left of the flag's broadcast, so on a loaded machine a member may get
//     it first and hold dead a member that left; every member gossips the
//     names it holds left in its push/pull state, and a member that holds
//     one of them dead at the same address marks it left (leftstate.go).
//   - Suspect when this member's own probe of it fails: memberlist reports
//     that only as the log line "Suspect NAME has failed, no acks
//     received", which the Cluster's log writer watches (the line is pinned
//     by TestMembership); it is cleared by the next direct probe that is
//     answered (PingDelegate), or a join, update or leave. Suspicion spread
//     by gossip from other members is not seen: Suspect is this member's
//     own view.
//
// # Placement
//
// Place and PlaceBackup are pure functions of the member set and the stream
// name (weighted rendezvous hashing): the same inputs give the same
// replicas on every node, and a member joining or leaving moves at most one
// replica of each stream. The catalog's controller calls them once per
// stream, when it is created.
//
// # Goroutines
//
// memberlist runs its own goroutines (probe, gossip, push/pull, listeners)
// from New until Shutdown. The Cluster owns up to three more, started by
// goFunc: the dispatcher, which calls Config.OnChange for each membership
// event in order, outside memberlist's locks; the reconnect loop, which
// joins members held dead again every Config.ReconnectInterval so that a
// healed partition merges; and, with Config.MeasureCapacity, the capacity
// loop, which measures this member's capacity every
// Config.CapacityInterval and spreads it when it moved. Shutdown stops
// memberlist, closes stop and waits for them.
package cluster
