package catalog

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"

	"google.golang.org/protobuf/proto"

	pb "github.com/rpstream/rpstream/catalog/catalogpb"
	"github.com/rpstream/rpstream/internal/validate"
)

// Errors of Apply, each the result of a command that changed nothing.
var (
	// ErrExists: CreateStream of a name that a live stream (creating,
	// active or deleting) has.
	ErrExists = errors.New("catalog: stream exists")
	// ErrNoStream: a command naming a stream (and id) that does not
	// exist or was deleted.
	ErrNoStream = errors.New("catalog: no such stream")
	// ErrNameTaken: RegisterNode of a name another incarnation holds,
	// without replace.
	ErrNameTaken = errors.New("catalog: node name held by another incarnation")
	// ErrNotLeader: GrantEpoch from a node that is not the stream's
	// leader, or from an incarnation of it that is not the registered one.
	ErrNotLeader = errors.New("catalog: not the stream's leader")
	// ErrUnknownNode: a copy placed on a node that is not registered, or
	// under another incarnation than the registered one.
	ErrUnknownNode = errors.New("catalog: unknown node")
	// ErrInvalid: a malformed command (it is in the log, and changes
	// nothing).
	ErrInvalid = errors.New("catalog: invalid command")
	// ErrStale: a decision made on a view of the stream that changed
	// since (another epoch).
	ErrStale = errors.New("catalog: decided on a stale view")
	// ErrCorrupt: a snapshot that does not decode.
	ErrCorrupt = errors.New("catalog: snapshot is corrupt")
)

// StateVersion is the version of State this code writes and reads.
const StateVersion = 1

// MaxNameLen is the longest stream or node name.
const MaxNameLen = validate.MaxNameLen

// Result is what a command did.
type Result struct {
	// Err is nil, or one of the package's errors (wrapped).
	Err error
	// Stream is the stream the command made or changed (a copy).
	Stream *pb.Stream
	// Epoch is the epoch GrantEpoch granted.
	Epoch uint64
}

// Catalog is the state machine: which nodes exist, which streams, where
// their copies are, who leads each under which epoch. It is pure: Apply
// is deterministic (the same commands in the same order give the same
// state on every node) and touches no clock, file or network. It is not
// safe for concurrent use: its owner (the Raft loop) serialises access.
type Catalog struct {
	nodes   map[string]*pb.Node
	streams map[string]*pb.Stream
	applied uint64
}

// New returns an empty catalog.
func New() *Catalog {
	return &Catalog{nodes: map[string]*pb.Node{}, streams: map[string]*pb.Stream{}}
}

// Applied is the index of the last log entry applied (by Apply or Skip)
// or restored.
func (c *Catalog) Applied() uint64 { return c.applied }

// Skip records that the log's entry at index, which is not a command (a
// new Raft leader's empty entry, a change of the Raft group), was
// applied: it changes nothing but Applied. Waiting for an index (a read
// barrier's, which is often such an entry) needs Applied to pass it.
func (c *Catalog) Skip(index uint64) {
	if index > c.applied {
		c.applied = index
	}
}

// ValidName reports whether name is 1 to MaxNameLen bytes of
// [A-Za-z0-9._-] starting with a letter or digit: safe as a file name and
// never hidden. Streams and nodes are named so (validate.Name, the rule
// streamcli and streamnode check too).
func ValidName(name string) error { return validate.Name(name) }

// Live reports whether a stream in state s exists for its users
// (creating or active).
func Live(s pb.StreamState) bool {
	return s == pb.StreamState_STREAM_STATE_CREATING || s == pb.StreamState_STREAM_STATE_ACTIVE
}

// Apply applies cmd, the entry at index of the log, and says what it
// did. A command that fails changes nothing but the applied index.
func (c *Catalog) Apply(index uint64, cmd *pb.Command) Result {
	if index > c.applied {
		c.applied = index
	}
	var r Result
	switch op := cmd.GetOp().(type) {
	case *pb.Command_RegisterNode:
		r.Err = c.register(index, cmd.Time, op.RegisterNode)
	case *pb.Command_CreateStream:
		r.Stream, r.Err = c.create(index, cmd.Time, op.CreateStream)
	case *pb.Command_ActivateStream:
		r.Stream, r.Err = c.activate(op.ActivateStream)
	case *pb.Command_DeleteStream:
		r.Stream, r.Err = c.delete(index, op.DeleteStream)
	case *pb.Command_CopyDropped:
		r.Stream, r.Err = c.dropped(op.CopyDropped)
	case *pb.Command_GrantEpoch:
		r.Stream, r.Err = c.grant(op.GrantEpoch)
		if r.Err == nil {
			r.Epoch = r.Stream.Epoch
		}
	case *pb.Command_ForgetNode:
		r.Err = c.forget(op.ForgetNode)
	case *pb.Command_ElectLeader:
		r.Stream, r.Err = c.elect(op.ElectLeader)
		if r.Err == nil {
			r.Epoch = r.Stream.Epoch
		}
	case *pb.Command_EpochStarted:
		r.Stream, r.Err = c.epochStarted(op.EpochStarted)
	case *pb.Command_SetRetention:
		r.Stream, r.Err = c.setRetention(op.SetRetention)
	case *pb.Command_TrimStream:
		r.Stream, r.Err = c.trim(op.TrimStream)
	case *pb.Command_AddConsumer:
		r.Stream, r.Err = c.addConsumer(cmd.Time, op.AddConsumer)
	case *pb.Command_RemoveConsumer:
		r.Stream, r.Err = c.removeConsumer(op.RemoveConsumer)
	case *pb.Command_AckConsumers:
		r.Stream, r.Err = c.ackConsumers(cmd.Time, op.AckConsumers)
	case *pb.Command_RestoreStream:
		r.Stream, r.Err = c.restore(op.RestoreStream)
		if r.Err == nil {
			r.Epoch = r.Stream.Epoch
		}
	default:
		r.Err = fmt.Errorf("%w: no operation", ErrInvalid)
	}
	if r.Stream != nil {
		r.Stream = proto.Clone(r.Stream).(*pb.Stream)
	}
	return r
}

func (c *Catalog) register(index uint64, now int64, op *pb.RegisterNode) error {
	if err := ValidName(op.Name); err != nil {
		return fmt.Errorf("%w: node name %v", ErrInvalid, err)
	}
	if op.Incarnation == 0 {
		return fmt.Errorf("%w: node %s: incarnation 0", ErrInvalid, op.Name)
	}
	if op.Role != pb.Role_ROLE_NODE && op.Role != pb.Role_ROLE_BACKUP {
		return fmt.Errorf("%w: node %s: role %v", ErrInvalid, op.Name, op.Role)
	}
	n := c.nodes[op.Name]
	switch {
	case n == nil:
		c.nodes[op.Name] = &pb.Node{Name: op.Name, Incarnation: op.Incarnation, Role: op.Role, RegisteredIndex: index, RegisteredTime: now}
	case n.Incarnation == op.Incarnation:
		if n.Role != op.Role {
			if held := c.firstLiveCopy(op.Name); held != "" {
				return fmt.Errorf("%w: %s holds a copy of %s: its role cannot change from %s to %s", ErrInvalid, op.Name, held, roleName(n.Role), roleName(op.Role))
			}
		}
		n.Role = op.Role
	case !op.Replace:
		return fmt.Errorf("%w: %s is held by incarnation %016x, not %016x", ErrNameTaken, op.Name, n.Incarnation, op.Incarnation)
	default:
		// A new incarnation (a wiped or replaced node): its copies of
		// every stream keep the old incarnation, so they count as
		// holding nothing.
		n.Incarnation, n.Role, n.RegisteredIndex, n.RegisteredTime = op.Incarnation, op.Role, index, now
	}
	return nil
}

func (c *Catalog) create(index uint64, now int64, op *pb.CreateStream) (*pb.Stream, error) {
	if err := ValidName(op.Name); err != nil {
		return nil, fmt.Errorf("%w: stream name %v", ErrInvalid, err)
	}
	if old := c.streams[op.Name]; old != nil && old.State != pb.StreamState_STREAM_STATE_DELETED {
		return nil, fmt.Errorf("%w: %s (id %d, %s)", ErrExists, op.Name, old.Id, StateName(old.State))
	}
	if validate.Replicas(int(op.Replicas)) != nil {
		return nil, fmt.Errorf("%w: stream %s: %d replicas", ErrInvalid, op.Name, op.Replicas)
	}
	if op.Acks < pb.Acks_ACKS_LEADER || op.Acks > pb.Acks_ACKS_ALL {
		return nil, fmt.Errorf("%w: stream %s: acks %v", ErrInvalid, op.Name, op.Acks)
	}
	if op.RegionSize == 0 {
		return nil, fmt.Errorf("%w: stream %s: region size 0", ErrInvalid, op.Name)
	}
	if err := c.checkCopies(op.Name, op.Replicas, op.Copies); err != nil {
		return nil, err
	}
	if err := validRetention(op.Name, op.Retention); err != nil {
		return nil, err
	}
	s := &pb.Stream{
		Name: op.Name, Id: index, Replicas: op.Replicas, Acks: op.Acks, RegionSize: op.RegionSize,
		Leader: op.Copies[0].Node, State: pb.StreamState_STREAM_STATE_CREATING, Created: now, CreateRequest: op.RequestId,
		// The first epoch goes to the leader with the stream: the
		// incarnation that makes its files leads under it without
		// another command; any later opening takes the next one.
		Epoch:     1,
		Retention: clonedRetention(op.Retention),
	}
	for _, cp := range op.Copies {
		s.Copies = append(s.Copies, proto.Clone(cp).(*pb.Copy))
	}
	c.streams[op.Name] = s
	return s, nil
}

// checkCopies checks a placement of stream name's copies: on registered
// nodes under their current incarnations, one per node, replicas
// (stream nodes) first, the leader's the first of them, then at most one
// backup copy, last, on a backup target.
func (c *Catalog) checkCopies(name string, replicas uint32, copies []*pb.Copy) error {
	backups, reps := 0, 0
	seen := map[string]bool{}
	for i, cp := range copies {
		n := c.nodes[cp.Node]
		if n == nil || n.Incarnation != cp.Incarnation {
			return fmt.Errorf("%w: copy of %s on %s (incarnation %016x)", ErrUnknownNode, name, cp.Node, cp.Incarnation)
		}
		if seen[cp.Node] {
			return fmt.Errorf("%w: stream %s: two copies on %s", ErrInvalid, name, cp.Node)
		}
		seen[cp.Node] = true
		switch {
		case cp.Backup:
			backups++
			if i != len(copies)-1 || n.Role != pb.Role_ROLE_BACKUP {
				return fmt.Errorf("%w: stream %s: backup copy on %s must be last, on a backup target", ErrInvalid, name, cp.Node)
			}
		case n.Role != pb.Role_ROLE_NODE:
			return fmt.Errorf("%w: stream %s: replica on %s, a backup target", ErrInvalid, name, cp.Node)
		default:
			reps++
		}
	}
	if uint32(reps) != replicas || backups > 1 {
		return fmt.Errorf("%w: stream %s: %d replicas and %d backups placed for %d replicas", ErrInvalid, name, reps, backups, replicas)
	}
	return nil
}

// find is the live or deleting stream name with id (any id if 0).
func (c *Catalog) find(name string, id uint64) (*pb.Stream, error) {
	s := c.streams[name]
	if s == nil || s.State == pb.StreamState_STREAM_STATE_DELETED || id != 0 && s.Id != id {
		return nil, fmt.Errorf("%w: %s (id %d)", ErrNoStream, name, id)
	}
	return s, nil
}

func (c *Catalog) activate(op *pb.ActivateStream) (*pb.Stream, error) {
	s, err := c.find(op.Name, op.StreamId)
	if err != nil {
		return nil, err
	}
	switch s.State {
	case pb.StreamState_STREAM_STATE_CREATING:
		s.State = pb.StreamState_STREAM_STATE_ACTIVE
	case pb.StreamState_STREAM_STATE_ACTIVE:
	default:
		return nil, fmt.Errorf("%w: %s is being deleted", ErrNoStream, op.Name)
	}
	return s, nil
}

func (c *Catalog) delete(index uint64, op *pb.DeleteStream) (*pb.Stream, error) {
	s, err := c.find(op.Name, op.StreamId)
	if err != nil {
		return nil, err
	}
	if !Live(s.State) {
		return nil, fmt.Errorf("%w: %s is being deleted", ErrNoStream, op.Name)
	}
	s.State = pb.StreamState_STREAM_STATE_DELETING
	s.DeletedIndex = index
	s.DeleteRequest = op.RequestId
	s.Restoring = nil
	s.PendingDrop = nil
	for _, cp := range s.Copies {
		s.PendingDrop = append(s.PendingDrop, cp.Node)
	}
	return s, nil
}

func (c *Catalog) dropped(op *pb.CopyDropped) (*pb.Stream, error) {
	s := c.streams[op.Name]
	if s == nil || s.Id != op.StreamId || Live(s.State) {
		return nil, fmt.Errorf("%w: %s (id %d) is not deleted", ErrNoStream, op.Name, op.StreamId)
	}
	if i := slices.Index(s.PendingDrop, op.Node); i >= 0 {
		s.PendingDrop = slices.Delete(s.PendingDrop, i, i+1)
	}
	if len(s.PendingDrop) == 0 {
		s.State = pb.StreamState_STREAM_STATE_DELETED
	}
	return s, nil
}

func (c *Catalog) grant(op *pb.GrantEpoch) (*pb.Stream, error) {
	s, err := c.find(op.Name, op.StreamId)
	if err != nil {
		return nil, err
	}
	if !Live(s.State) {
		return nil, fmt.Errorf("%w: %s is being deleted", ErrNoStream, op.Name)
	}
	n := c.nodes[op.Leader]
	if s.Leader != op.Leader || n == nil || n.Incarnation != op.Incarnation {
		return nil, fmt.Errorf("%w: %s (incarnation %016x) asks for an epoch of %s, led by %s", ErrNotLeader, op.Leader, op.Incarnation, op.Name, s.Leader)
	}
	if lc := s.Copies[0]; lc.Incarnation != op.Incarnation {
		return nil, fmt.Errorf("%w: %s's copy of %s was placed on incarnation %016x, not %016x (the node was replaced)", ErrNotLeader, op.Leader, op.Name, lc.Incarnation, op.Incarnation)
	}
	s.Epoch++
	return s, nil
}

// elect moves the stream's leadership to op.Leader under the next epoch.
// The new leader must hold a copy of its registered incarnation and be a
// stream node's (not a backup's): a copy placed on an older incarnation
// holds nothing, and a backup target leads nothing. Its copy moves to
// copies[0]; the old leader keeps a copy (it becomes a follower when it
// is back). A decision made on another epoch than the current one (a
// stale view, or a race with another election) changes nothing.
func (c *Catalog) elect(op *pb.ElectLeader) (*pb.Stream, error) {
	s, err := c.find(op.Name, op.StreamId)
	if err != nil {
		return nil, err
	}
	if !Live(s.State) {
		return nil, fmt.Errorf("%w: %s is being deleted", ErrNoStream, op.Name)
	}
	if op.FromEpoch != s.Epoch {
		return nil, fmt.Errorf("%w: election of %s for %s decided at epoch %d, the stream is at epoch %d", ErrStale, op.Leader, op.Name, op.FromEpoch, s.Epoch)
	}
	n := c.nodes[op.Leader]
	if n == nil || n.Incarnation != op.Incarnation {
		return nil, fmt.Errorf("%w: %s (incarnation %016x) is not registered so", ErrUnknownNode, op.Leader, op.Incarnation)
	}
	if n.Role != pb.Role_ROLE_NODE {
		return nil, fmt.Errorf("%w: %s is a backup target, which leads nothing", ErrInvalid, op.Leader)
	}
	k := slices.IndexFunc(s.Copies, func(cp *pb.Copy) bool { return cp.Node == op.Leader })
	if k < 0 || s.Copies[k].Backup || s.Copies[k].Incarnation != op.Incarnation {
		return nil, fmt.Errorf("%w: %s holds no current copy of %s", ErrInvalid, op.Leader, op.Name)
	}
	if k > 0 {
		s.Copies[0], s.Copies[k] = s.Copies[k], s.Copies[0]
	}
	s.Leader = op.Leader
	s.Epoch++
	s.Elections++
	s.LastElection = op.Reason
	return s, nil
}

// epochStarted raises the stream's commit floor: its leader under
// op.Epoch committed the epoch's first entry, so every entry before
// op.Index is committed. Only the current epoch's leader reports it; a
// report of an older epoch, or a lower floor, changes nothing.
func (c *Catalog) epochStarted(op *pb.EpochStarted) (*pb.Stream, error) {
	s, err := c.find(op.Name, op.StreamId)
	if err != nil {
		return nil, err
	}
	if op.Epoch != s.Epoch {
		return nil, fmt.Errorf("%w: epoch %d of %s started, the stream is at epoch %d", ErrStale, op.Epoch, op.Name, s.Epoch)
	}
	if op.Index > s.CommitFloor {
		s.CommitFloor = op.Index
	}
	if s.Restoring != nil && op.Epoch >= s.Restoring.Epoch {
		// The restored stream serves: its source copy is no longer
		// needed unless placed.
		s.Restoring = nil
	}
	return s, nil
}

func (c *Catalog) forget(op *pb.ForgetNode) error {
	if c.nodes[op.Name] == nil {
		return fmt.Errorf("%w: %s", ErrUnknownNode, op.Name)
	}
	if held := c.firstLiveCopy(op.Name); held != "" {
		return fmt.Errorf("%w: %s holds a copy of %s", ErrInvalid, op.Name, held)
	}
	// A forgotten node never reports its copies of deleted streams
	// dropped: the tombstones stop waiting for it.
	for _, name := range slices.Sorted(maps.Keys(c.streams)) {
		s := c.streams[name]
		if i := slices.Index(s.PendingDrop, op.Name); i >= 0 {
			s.PendingDrop = slices.Delete(s.PendingDrop, i, i+1)
			if len(s.PendingDrop) == 0 {
				s.State = pb.StreamState_STREAM_STATE_DELETED
			}
		}
	}
	delete(c.nodes, op.Name)
	return nil
}

// firstLiveCopy is the first stream, in name order (the same on every
// member), that is creating or active with a copy on node; "" if none.
func (c *Catalog) firstLiveCopy(node string) string {
	for _, name := range slices.Sorted(maps.Keys(c.streams)) {
		s := c.streams[name]
		if !Live(s.State) {
			continue
		}
		for _, cp := range s.Copies {
			if cp.Node == node {
				return s.Name
			}
		}
	}
	return ""
}

func roleName(r pb.Role) string {
	return strings.ToLower(strings.TrimPrefix(r.String(), "ROLE_"))
}

// Stream returns a copy of stream name's record (tombstones included).
func (c *Catalog) Stream(name string) (*pb.Stream, bool) {
	s := c.streams[name]
	if s == nil {
		return nil, false
	}
	return proto.Clone(s).(*pb.Stream), true
}

// Streams returns copies of every stream record, tombstones included,
// sorted by name.
func (c *Catalog) Streams() []*pb.Stream {
	out := make([]*pb.Stream, 0, len(c.streams))
	for _, s := range c.streams {
		out = append(out, proto.Clone(s).(*pb.Stream))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Node returns a copy of node name's record.
func (c *Catalog) Node(name string) (*pb.Node, bool) {
	n := c.nodes[name]
	if n == nil {
		return nil, false
	}
	return proto.Clone(n).(*pb.Node), true
}

// Nodes returns copies of every node record, sorted by name.
func (c *Catalog) Nodes() []*pb.Node {
	out := make([]*pb.Node, 0, len(c.nodes))
	for _, n := range c.nodes {
		out = append(out, proto.Clone(n).(*pb.Node))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// State returns the whole catalog as a snapshot message.
func (c *Catalog) State() *pb.State {
	return &pb.State{Version: StateVersion, Nodes: c.Nodes(), Streams: c.Streams()}
}

// Snapshot encodes the catalog (deterministically: equal catalogs give
// equal bytes).
func (c *Catalog) Snapshot() ([]byte, error) {
	return proto.MarshalOptions{Deterministic: true}.Marshal(c.State())
}

// Restore replaces the catalog with the snapshot b, taken at index
// applied. The catalog is unchanged if b does not decode or is not valid.
func (c *Catalog) Restore(applied uint64, b []byte) error {
	var st pb.State
	if err := proto.Unmarshal(b, &st); err != nil {
		return fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	if st.Version != StateVersion {
		return fmt.Errorf("%w: state version %d, this build reads %d", ErrCorrupt, st.Version, StateVersion)
	}
	nodes := map[string]*pb.Node{}
	for _, n := range st.Nodes {
		if ValidName(n.Name) != nil || nodes[n.Name] != nil {
			return fmt.Errorf("%w: node %q invalid or repeated", ErrCorrupt, n.Name)
		}
		nodes[n.Name] = n
	}
	streams := map[string]*pb.Stream{}
	for _, s := range st.Streams {
		if ValidName(s.Name) != nil || streams[s.Name] != nil || len(s.Copies) == 0 && s.State != pb.StreamState_STREAM_STATE_DELETED {
			return fmt.Errorf("%w: stream %q invalid or repeated", ErrCorrupt, s.Name)
		}
		streams[s.Name] = s
	}
	c.nodes, c.streams, c.applied = nodes, streams, applied
	return nil
}

// StateName is a stream state in lower case, as people read it.
func StateName(s pb.StreamState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "STREAM_STATE_"))
}

// AcksName is an acknowledgement policy in lower case.
func AcksName(a pb.Acks) string {
	return strings.ToLower(strings.TrimPrefix(a.String(), "ACKS_"))
}

// HolderOf says whether node holds a copy of s, and whether that copy is
// of its current incarnation inc (a copy of an older incarnation holds
// nothing).
func HolderOf(s *pb.Stream, node string, inc uint64) (holds, current bool) {
	for _, cp := range s.Copies {
		if cp.Node == node {
			return true, cp.Incarnation == inc
		}
	}
	return false, false
}
