# rpstream. `make test` is what CI runs (.ci/run) and what README gives a
# new user; `make demo` is the main job on embedded defaults.
# Go from /usr/local/go (our machines) or Debian's golang-go (scripts/deps.sh),
# and the pinned tools it installs into GOPATH/bin.
export PATH := /usr/local/go/bin:$(HOME)/go/bin:$(PATH)
GO      ?= go
PKGS    := ./...
BIN     := bin
# The version --version prints (internal/buildinfo): the repository's
# description (tag, or commit, "-dirty" with changes); empty outside git.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null)
VERSION_LDFLAGS := $(if $(VERSION),-X github.com/rpstream/rpstream/internal/buildinfo.Version=$(VERSION))

.PHONY: all deps build demo test lint unit build-variants bench fuzz clean proto test-vm test-softroce test-pmem test-pmem-eadr test-softroce-host images images-rdma compose-up compose-down

all: build

deps:
	@scripts/deps.sh

# With cgo and rdma-core's headers (scripts/deps.sh installs them) the
# binaries include the verbs provider (--rdma verbs; libibverbs and
# librdmacm are linked dynamically). The pure-Go CGO_ENABLED=0 build is
# checked by build-variants and used by make images.
build: deps
	@mkdir -p $(BIN)
	$(GO) build -tags "$$(scripts/verbs-tags.sh)" -ldflags "$(VERSION_LDFLAGS)" -o $(BIN)/ ./cmd/...

demo: build
	@scripts/demo.sh

# Every test: formatting, vet, the unit/crash/kill/conformance tests under
# the race detector, the builds that must keep compiling, and the tests
# that need SoftRoCE and DAX, inside a QEMU VM (test-vm).
test: deps lint build-variants unit test-vm

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needs to run on:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) vet -tags verbs $(PKGS)
	$(GO) vet -tags "$$(scripts/verbs-tags.sh)" ./rdma/verbs/
	@scripts/proto.sh && git diff --exit-code -- '*.pb.go' >/dev/null || \
	  { echo "generated protobuf code is stale: run make proto and commit"; exit 1; }

build-variants:
	CGO_ENABLED=0 $(GO) build $(PKGS)
	$(GO) build -tags verbs $(PKGS)
	$(GO) build -tags "$$(scripts/verbs-tags.sh)" $(PKGS)

unit:
	$(GO) test -race -count=1 -timeout 12m $(PKGS)
	$(GO) test -race -count=1 -tags "$$(scripts/verbs-tags.sh)" ./rdma/verbs/

bench: deps
	$(GO) test -run '^$$' -bench . -benchtime 1s $(PKGS)

# The image (deploy/Dockerfile): static streamnode and streamcli FROM
# scratch. integration/docker_test.go builds its own, tagged uniquely.
IMAGE          ?= rpstream:dev
COMPOSE_PROJECT ?= rpstream
# docker compose (v2) where it works, else docker-compose (v1).
COMPOSE        ?= $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)

images: deps
	@mkdir -p $(BIN)/static/data
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w $(VERSION_LDFLAGS)' -o $(BIN)/static/ ./cmd/streamnode ./cmd/streamcli
	docker build -f deploy/Dockerfile -t $(IMAGE) $(BIN)/static

# The variant for RDMA hosts (deploy/Dockerfile.rdma): streamnode and
# streamcli with the verbs provider, rdma-core's libraries and drivers.
RDMA_IMAGE     ?= rpstream:rdma-dev
images-rdma: deps
	@scripts/rdma-image.sh $(RDMA_IMAGE)

# Three nodes and a backup (docker-compose.yml); README, "A cluster with
# docker-compose". compose-down also removes the data volumes.
compose-up: images build
	STREAMNODE=$(BIN)/streamnode scripts/compose-tls.sh
	RPSTREAM_IMAGE=$(IMAGE) $(COMPOSE) -p $(COMPOSE_PROJECT) up -d

compose-down:
	RPSTREAM_IMAGE=$(IMAGE) $(COMPOSE) -p $(COMPOSE_PROJECT) down -v --remove-orphans -t 20

# Short fuzzing of every parser of outside bytes (FUZZTIME each).
FUZZTIME ?= 30s
fuzz: deps
	@scripts/fuzz.sh $(FUZZTIME)

# Inside a QEMU VM with Debian's 6.1 kernel (scripts/vm.sh, scripts/vm-tests.sh):
# test-softroce runs the rdma conformance suite over verbs on rxe and three
# streamnodes replicating over verbs with a follower killed; test-pmem the
# pmem and local suites (kill -9 included) on an ext4 mounted -o dax;
# test-vm both in one VM. Where QEMU or the kernel is missing they fail
# saying what is missing; RPSTREAM_SKIP_VM=1 makes them skip instead.
test-vm: deps
	@scripts/vm-tests.sh softroce pmem

test-softroce: deps
	@scripts/vm-tests.sh softroce

test-pmem: deps
	@scripts/vm-tests.sh pmem

# The eADR detection on a QEMU NVDIMM whose persistence domain is the CPU
# cache (not part of make test).
test-pmem-eadr: deps
	@scripts/vm-tests.sh eadr

# The conformance suite over verbs on this machine's own kernel (root, a
# kernel with rdma_rxe or a real RDMA NIC).
test-softroce-host: deps
	@scripts/softroce.sh

# Regenerate the committed protobuf code with the pinned protoc-gen-go.
proto: deps
	@scripts/proto.sh

clean:
	rm -rf $(BIN)
