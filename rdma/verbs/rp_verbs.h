// rp_verbs.h: the C side of the verbs provider, included by every cgo
// file of the package (static functions, so each file gets its copy).
// Each function does one verbs step and returns an errno, so that the Go
// side makes one cgo call per step.
#ifndef RP_VERBS_H
#define RP_VERBS_H
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <infiniband/verbs.h>
#include <rdma/rdma_cma.h>

// Build-time detection of the newer verbs. They are enum members and
// inline functions, which #ifdef cannot see, so scripts/verbs-tags.sh
// probes the compiler and its tags set RP_HAVE_* through cgo CFLAGS
// (feature_*.go). rdma-core 44 has atomic write, 45 adds flush.
#ifndef RP_HAVE_ATOMIC_WRITE
#define RP_HAVE_ATOMIC_WRITE 0
#endif
#ifndef RP_HAVE_FLUSH
#define RP_HAVE_FLUSH 0
#endif
#if RP_HAVE_ATOMIC_WRITE
#define RP_ATOMIC_WRITE_OP IBV_QP_EX_WITH_ATOMIC_WRITE
#else
#define RP_ATOMIC_WRITE_OP 0
#endif
#if RP_HAVE_FLUSH
#define RP_FLUSH_OP IBV_QP_EX_WITH_FLUSH
#else
#define RP_FLUSH_OP 0
#endif

static int rp_have_atomic_write(void) { return RP_HAVE_ATOMIC_WRITE; }
static int rp_have_flush(void) { return RP_HAVE_FLUSH; }
static uint64_t rp_ex_ops(int atomic_write, int flush) {
	uint64_t f = IBV_QP_EX_WITH_RDMA_WRITE | IBV_QP_EX_WITH_RDMA_READ | IBV_QP_EX_WITH_SEND;
	if (atomic_write) f |= RP_ATOMIC_WRITE_OP;
	if (flush) f |= RP_FLUSH_OP;
	return f;
}

// Device limits and extended capabilities of a context.
struct rp_caps { uint64_t flags_ex; int max_qp_wr; int max_rd_atom; int max_init_rd_atom; };
static int rp_query(struct ibv_context *ctx, struct rp_caps *out) {
	struct ibv_device_attr_ex a;
	memset(&a, 0, sizeof a);
	memset(out, 0, sizeof *out);
	if (ibv_query_device_ex(ctx, NULL, &a)) return errno ? errno : EIO;
	out->flags_ex = a.device_cap_flags_ex;
	out->max_qp_wr = a.orig_attr.max_qp_wr;
	out->max_rd_atom = a.orig_attr.max_qp_rd_atom;
	out->max_init_rd_atom = a.orig_attr.max_qp_init_rd_atom;
	return 0;
}

static int rp_nonblock(int fd) {
	int f = fcntl(fd, F_GETFL);
	if (f < 0) return errno;
	return fcntl(fd, F_SETFL, f | O_NONBLOCK) < 0 ? errno : 0;
}

static int rp_sockaddr(const char *host, const char *port, struct sockaddr_storage *out) {
	struct addrinfo hints, *res;
	memset(&hints, 0, sizeof hints);
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE;
	if (getaddrinfo(host[0] ? host : NULL, port, &hints, &res)) return EINVAL;
	memcpy(out, res->ai_addr, res->ai_addrlen);
	freeaddrinfo(res);
	return 0;
}

static int rp_create_id(struct rdma_event_channel *ch, struct rdma_cm_id **id) {
	return rdma_create_id(ch, id, NULL, RDMA_PS_TCP) ? errno : 0;
}
static int rp_bind(struct rdma_cm_id *id, struct sockaddr_storage *sa) {
	return rdma_bind_addr(id, (struct sockaddr *)sa) ? errno : 0;
}
static int rp_listen(struct rdma_cm_id *id, int backlog) { return rdma_listen(id, backlog) ? errno : 0; }
static int rp_resolve_addr(struct rdma_cm_id *id, struct sockaddr_storage *dst, int ms) {
	return rdma_resolve_addr(id, NULL, (struct sockaddr *)dst, ms) ? errno : 0;
}
static int rp_resolve_route(struct rdma_cm_id *id, int ms) { return rdma_resolve_route(id, ms) ? errno : 0; }
static int rp_migrate(struct rdma_cm_id *id, struct rdma_event_channel *ch) { return rdma_migrate_id(id, ch) ? errno : 0; }
static int rp_port(struct rdma_cm_id *id) { return ntohs(rdma_get_src_port(id)); }

static int rp_conn_param(struct rdma_cm_id *id, int accept, int rd_atom) {
	struct rdma_conn_param p;
	memset(&p, 0, sizeof p);
	p.responder_resources = rd_atom;
	p.initiator_depth = rd_atom;
	p.retry_count = 7;
	p.rnr_retry_count = 7; // infinite: a send waits for the peer's receive
	return (accept ? rdma_accept(id, &p) : rdma_connect(id, &p)) ? errno : 0;
}

// rp_event takes one connection-manager event off ch (non-blocking fd:
// EAGAIN when there is none) and acknowledges it.
static int rp_event(struct rdma_event_channel *ch, int *type, int *status, struct rdma_cm_id **id) {
	struct rdma_cm_event *ev;
	if (rdma_get_cm_event(ch, &ev)) return errno;
	*type = ev->event;
	*status = ev->status;
	*id = ev->id;
	rdma_ack_cm_event(ev);
	return 0;
}

// One connection's verbs resources.
struct rp_conn {
	struct rdma_cm_id *id;
	struct ibv_comp_channel *cch;
	struct ibv_cq *cq;
	struct ibv_qp_ex *qpx; // set when the ibv_wr_* API is used
};

static void rp_conn_free(struct rp_conn *c) {
	if (!c) return;
	if (c->id && c->id->qp) rdma_destroy_qp(c->id);
	if (c->cq) ibv_destroy_cq(c->cq);
	if (c->cch) ibv_destroy_comp_channel(c->cch);
	free(c);
}

static int rp_conn_new(struct rdma_cm_id *id, struct ibv_pd *pd, int depth, uint64_t ex_ops, int max_inline, struct rp_conn **out) {
	struct rp_conn *c = calloc(1, sizeof *c);
	int err = 0;
	if (!c) return ENOMEM;
	c->id = id;
	if (!(c->cch = ibv_create_comp_channel(id->verbs))) { err = errno; goto fail; }
	if ((err = rp_nonblock(c->cch->fd))) goto fail;
	if (!(c->cq = ibv_create_cq(id->verbs, 2 * depth + 8, NULL, c->cch, 0))) { err = errno; goto fail; }
	if ((err = ibv_req_notify_cq(c->cq, 0))) goto fail;
	struct ibv_qp_init_attr_ex a;
	memset(&a, 0, sizeof a);
	a.qp_type = IBV_QPT_RC;
	a.send_cq = c->cq;
	a.recv_cq = c->cq;
	a.cap.max_send_wr = depth;
	a.cap.max_recv_wr = depth;
	a.cap.max_send_sge = 1;
	a.cap.max_recv_sge = 1;
	a.cap.max_inline_data = max_inline;
	a.comp_mask = IBV_QP_INIT_ATTR_PD;
	a.pd = pd;
	if (ex_ops) {
		a.comp_mask |= IBV_QP_INIT_ATTR_SEND_OPS_FLAGS;
		a.send_ops_flags = ex_ops;
	}
	if (rdma_create_qp_ex(id, &a)) { err = errno; goto fail; }
	if (ex_ops && !(c->qpx = ibv_qp_to_qp_ex(id->qp))) { err = EOPNOTSUPP; goto fail; }
	*out = c;
	return 0;
fail:
	rp_conn_free(c);
	return err ? err : EIO;
}

enum { RP_WRITE = 1, RP_READ, RP_SEND, RP_ATOMIC, RP_FENCED_WRITE8, RP_FLUSH, RP_RECV };

// One work request, filled by Go in C memory.
struct rp_wr {
	uint64_t wr_id;
	uint64_t laddr;
	uint64_t raddr;
	uint64_t value; // atomic write
	uint32_t kind;
	uint32_t len;
	uint32_t lkey;
	uint32_t rkey;
	uint32_t flush_type;
};

static int rp_post(struct rp_conn *c, struct rp_wr *w) {
	struct ibv_sge sge = { .addr = w->laddr, .length = w->len, .lkey = w->lkey };
	if (w->kind == RP_RECV) {
		struct ibv_recv_wr wr, *bad;
		memset(&wr, 0, sizeof wr);
		wr.wr_id = w->wr_id;
		wr.sg_list = &sge;
		wr.num_sge = w->len ? 1 : 0;
		return ibv_post_recv(c->id->qp, &wr, &bad);
	}
	if (c->qpx) {
		struct ibv_qp_ex *q = c->qpx;
		ibv_wr_start(q);
		q->wr_id = w->wr_id;
		q->wr_flags = IBV_SEND_SIGNALED;
		switch (w->kind) {
		case RP_WRITE: ibv_wr_rdma_write(q, w->rkey, w->raddr); ibv_wr_set_sge(q, w->lkey, w->laddr, w->len); break;
		case RP_READ: ibv_wr_rdma_read(q, w->rkey, w->raddr); ibv_wr_set_sge(q, w->lkey, w->laddr, w->len); break;
		case RP_SEND: ibv_wr_send(q); ibv_wr_set_sge(q, w->lkey, w->laddr, w->len); break;
		case RP_FENCED_WRITE8:
			q->wr_flags |= IBV_SEND_FENCE | IBV_SEND_INLINE;
			ibv_wr_rdma_write(q, w->rkey, w->raddr);
			ibv_wr_set_inline_data(q, &w->value, 8);
			break;
#if RP_HAVE_ATOMIC_WRITE
		case RP_ATOMIC:
			q->wr_flags |= IBV_SEND_FENCE; // after earlier reads too, not only writes
			ibv_wr_atomic_write(q, w->rkey, w->raddr, &w->value);
			break;
#endif
#if RP_HAVE_FLUSH
		case RP_FLUSH: ibv_wr_flush(q, w->rkey, w->raddr, w->len, (uint8_t)w->flush_type, IBV_FLUSH_RANGE); break;
#endif
		default: ibv_wr_abort(q); return EINVAL;
		}
		return ibv_wr_complete(q);
	}
	struct ibv_send_wr wr, *bad;
	memset(&wr, 0, sizeof wr);
	wr.wr_id = w->wr_id;
	wr.send_flags = IBV_SEND_SIGNALED;
	wr.sg_list = &sge;
	wr.num_sge = w->len ? 1 : 0;
	wr.wr.rdma.remote_addr = w->raddr;
	wr.wr.rdma.rkey = w->rkey;
	switch (w->kind) {
	case RP_WRITE: wr.opcode = IBV_WR_RDMA_WRITE; break;
	case RP_READ: wr.opcode = IBV_WR_RDMA_READ; break;
	case RP_SEND: wr.opcode = IBV_WR_SEND; break;
	case RP_FENCED_WRITE8:
		wr.opcode = IBV_WR_RDMA_WRITE;
		wr.send_flags |= IBV_SEND_FENCE | IBV_SEND_INLINE;
		sge.addr = (uintptr_t)&w->value; // copied at post time (inline)
		sge.length = 8;
		sge.lkey = 0;
		wr.num_sge = 1;
		break;
	default: return EINVAL;
	}
	return ibv_post_send(c->id->qp, &wr, &bad);
}

struct rp_wc { uint64_t wr_id; uint32_t status; uint32_t opcode; uint32_t byte_len; uint32_t vendor_err; };

// rp_poll re-arms the completion channel (when it signalled) and drains up
// to n completions into out.
static int rp_poll(struct rp_conn *c, struct rp_wc *out, int n) {
	struct ibv_cq *cq;
	void *ctx;
	if (ibv_get_cq_event(c->cch, &cq, &ctx) == 0) {
		ibv_ack_cq_events(cq, 1);
		ibv_req_notify_cq(c->cq, 0);
	}
	struct ibv_wc wc[32];
	if (n > 32) n = 32;
	int got = ibv_poll_cq(c->cq, n, wc);
	for (int i = 0; i < got; i++) {
		out[i].wr_id = wc[i].wr_id;
		out[i].status = wc[i].status;
		out[i].opcode = wc[i].opcode;
		out[i].byte_len = wc[i].byte_len;
		out[i].vendor_err = wc[i].vendor_err;
	}
	return got;
}

static int rp_peer_addr(struct rdma_cm_id *id, char *buf, int len) {
	char host[NI_MAXHOST], serv[NI_MAXSERV];
	struct sockaddr *sa = rdma_get_peer_addr(id);
	socklen_t sl = sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
	if (getnameinfo(sa, sl, host, sizeof host, serv, sizeof serv, NI_NUMERICHOST | NI_NUMERICSERV)) return EINVAL;
	snprintf(buf, len, sa->sa_family == AF_INET6 ? "[%s]:%s" : "%s:%s", host, serv);
	return 0;
}

// rp_qp_access changes which one-sided operations the peer may perform on
// this queue pair (RTS to RTS with IBV_QP_ACCESS_FLAGS).
static int rp_qp_access(struct rp_conn *c, int flags) {
	struct ibv_qp_attr a;
	memset(&a, 0, sizeof a);
	a.qp_access_flags = flags;
	return ibv_modify_qp(c->id->qp, &a, IBV_QP_ACCESS_FLAGS);
}

// rp_qp_rnr_timer sets the RNR NAK timer this side sends when a SEND
// finds no receive posted (allowed RTS to RTS).
static int rp_qp_rnr_timer(struct rp_conn *c, int t) {
	struct ibv_qp_attr a;
	memset(&a, 0, sizeof a);
	a.min_rnr_timer = t;
	return ibv_modify_qp(c->id->qp, &a, IBV_QP_MIN_RNR_TIMER);
}

static int rp_comp_fd(struct rp_conn *c) { return c->cch->fd; }
static struct ibv_context *rp_id_verbs(struct rdma_cm_id *id) { return id->verbs; }
static int rp_ech_fd(struct rdma_event_channel *ch) { return ch->fd; }

static struct ibv_mr *rp_reg_mr(struct ibv_pd *pd, uintptr_t addr, size_t len, int access, int *err) {
	struct ibv_mr *mr = ibv_reg_mr(pd, (void *)addr, len, access);
	*err = mr ? 0 : errno;
	return mr;
}
static uint32_t rp_mr_lkey(struct ibv_mr *mr) { return mr->lkey; }
static uint32_t rp_mr_rkey(struct ibv_mr *mr) { return mr->rkey; }

// rp_first_device returns librdmacm's context of the first RDMA device:
// the same context rdma_cm ids on that device report, so that the peer's
// protection domain is usable on their queue pairs.
static struct ibv_context *rp_first_device(int *err) {
	int n = 0;
	struct ibv_context **l = rdma_get_devices(&n);
	struct ibv_context *ctx = (l && n > 0) ? l[0] : NULL;
	*err = ctx ? 0 : (errno ? errno : ENODEV);
	if (l) rdma_free_devices(l);
	return ctx;
}

#endif
