# containerjob build, test and install.
PREFIX     ?= /usr/local
BINDIR     ?= $(PREFIX)/bin
LIBDIR     ?= $(PREFIX)/lib
LIBEXECDIR ?= $(PREFIX)/libexec
DATADIR    ?= $(PREFIX)/share
SYSCONFDIR ?= /etc
DESTDIR    ?=
SUDO_PATH  ?= /usr/bin/sudo
VERSION    ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
GO         ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
CC         ?= cc
TESTIMAGE  ?= alpine:3.20
SPANK_CFLAGS ?= -std=gnu11 -Wall -Wextra -Werror -O2 -fPIC
# Packages: nfpm, pinned, run from the Go module proxy (not linked into
# containerjob, so not in go.mod).
NFPM        ?= $(GO) run github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.45.2
PKG_VERSION ?= 0.1.$(shell git rev-list --count HEAD 2>/dev/null || echo 0)
PKGROOT     := $(CURDIR)/bin/pkgroot

LDFLAGS := -s -w \
	-X main.sudoPath=$(SUDO_PATH) \
	-X main.selfPath=$(BINDIR)/containerjob \
	-X github.com/containerjob/containerjob/launcher.InitPath=$(LIBEXECDIR)/containerjob/containerjob-init \
	-X github.com/containerjob/containerjob/launcher.Version=$(VERSION)

# Paths substituted into the contrib files at install time.
SUBST = sed -e 's|@BINDIR@|$(BINDIR)|g' -e 's|@LIBDIR@|$(LIBDIR)|g' -e 's|@LIBEXECDIR@|$(LIBEXECDIR)|g'

.PHONY: lint e2e-pbs lane-prep lane-trixie lane-forky lane-engine lane-cgroup2 spank-check all build spank man test unit fuzz integration e2e testimage install clean deps services check demo bench pkgroot deb rpm guide

all: build spank

build:
	CGO_ENABLED=1 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/containerjob ./cmd/containerjob
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w' -o bin/containerjob-init ./cmd/containerjob-init

# The SPANK plugin, against the installed Slurm's spank.h; only the SPANK
# entry points and plugin metadata are exported (spank/exports.map).
spank: bin/spank_containerjob.so

bin/spank_containerjob.so: spank/containerjob.c spank/exports.map
	@mkdir -p bin
	$(CC) $(SPANK_CFLAGS) -shared -Wl,--version-script=spank/exports.map -o $@ spank/containerjob.c

# The plugin with -Werror against the installed Slurm's headers and Debian
# 13's (Slurm 24.11, fetched by name, headers only).
spank-check:
	./contrib/dev/spank-check

# The code itself: gofmt, go vet and staticcheck (pinned, from the Go
# module proxy) on every package, under every build tag; zero findings.
STATICCHECK ?= $(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2
GOFILES_DIRS = cmd node doctor launcher policy scheduler internal test
lint:
	@out=$$($(dir $(GO))gofmt -l $(GOFILES_DIRS)); if [ -n "$$out" ]; then echo "lint: gofmt -w these:"; echo "$$out"; exit 1; fi
	for tags in "" integration e2e e2epbs gendocs; do \
		$(GO) vet -tags "$$tags" ./... && $(STATICCHECK) -tags "$$tags" ./... || exit 1; done

# Unit tests: pure, no engine, no scheduler.
unit:
	$(GO) test -count=1 ./...

# Integration tests: the installed binary as real users, real sudo, the
# real engine (see .ci/run for what must be running).
integration:
	CONTAINERJOB_DEB=$(CONTAINERJOB_DEB) CONTAINERJOB_RPM=$(CONTAINERJOB_RPM) CONTAINERJOB_BIN=$(BINDIR)/containerjob $(GO) test -count=1 -tags integration -v ./test/integration/...

# End-to-end tests: real Slurm jobs on the local test cluster.
e2e:
	CONTAINERJOB_BIN=$(BINDIR)/containerjob $(GO) test -count=1 -tags e2e -v -timeout 20m ./test/e2e/...

# Fuzz targets, each for a number of runs (about 15 s each here); new
# crashers land in testdata/fuzz. Not for a time: Go 1.26's coordinator can
# fail a run bounded by -fuzztime=DURATION at its deadline on a busy machine
# ("context deadline exceeded" with no failing input; golang/go#75804, fixed
# in Go 1.27), as it did in CI here. FUZZTIME=30s sets a time instead.
fuzz:
	for t in FuzzParse:100000x FuzzNormalizeImage:500000x FuzzImagePattern:30000x; do \
		$(GO) test -run=NONE -fuzz="^$${t%%:*}\$$" -fuzztime=$(or $(FUZZTIME),$${t#*:}) -timeout 10m ./policy/ || exit 1; done
	$(GO) test -run=NONE -fuzz='^FuzzRunArgs$$' -fuzztime=$(or $(FUZZTIME),80000x) -timeout 10m ./cmd/containerjob/

# End-to-end tests in real PBS jobs, against whatever PBS server answers
# here: inside contrib/pbs/testcomplex's complex when it is up, else on the
# host; with no PBS server the tier skips with one line (CI has none).
e2e-pbs:
	CGO_ENABLED=0 $(GO) test -c -tags e2epbs -o bin/e2epbs.test ./test/e2epbs
	if ./contrib/pbs/testcomplex run true 2>/dev/null; then \
		./contrib/pbs/testcomplex run sh -c 'cd $(CURDIR)/test/e2epbs && CONTAINERJOB_BIN=$(BINDIR)/containerjob $(CURDIR)/bin/e2epbs.test -test.v'; \
	else cd test/e2epbs && CONTAINERJOB_BIN=$(BINDIR)/containerjob ../../bin/e2epbs.test -test.v; fi

test: unit fuzz integration e2e e2e-pbs

# A local image built from Debian's busybox-static: no registry needed.
testimage:
	./contrib/testimage/build $(TESTIMAGE)
	./contrib/testimage/build-mpi

# Man pages from the CLI itself, and containerjob-policy(5) from docs/policy.md.
# The generator is a separate build (-tags gendocs) of the same CLI, so the
# installed binary does not carry the markdown/man packages.
man:
	CGO_ENABLED=1 $(GO) build -tags gendocs -trimpath -ldflags '$(LDFLAGS)' -o bin/containerjob-gendocs ./cmd/containerjob
	rm -rf bin/man && bin/containerjob-gendocs gen-man --policy-doc docs/policy.md bin/man

install: build spank man
	install -D -m 0755 bin/containerjob $(DESTDIR)$(BINDIR)/containerjob
	install -d -m 0755 $(DESTDIR)$(DATADIR)/man/man1 $(DESTDIR)$(DATADIR)/man/man5
	install -m 0644 bin/man/man1/*.1 $(DESTDIR)$(DATADIR)/man/man1/
	install -m 0644 bin/man/man5/*.5 $(DESTDIR)$(DATADIR)/man/man5/
	install -d -m 0755 $(DESTDIR)$(DATADIR)/bash-completion/completions $(DESTDIR)$(DATADIR)/zsh/site-functions
	bin/containerjob completion bash > $(DESTDIR)$(DATADIR)/bash-completion/completions/containerjob
	bin/containerjob completion zsh > $(DESTDIR)$(DATADIR)/zsh/site-functions/_containerjob
	install -D -m 0755 bin/spank_containerjob.so $(DESTDIR)$(LIBDIR)/containerjob/spank_containerjob.so
	install -d -m 0755 $(DESTDIR)$(LIBEXECDIR)/containerjob $(DESTDIR)$(DATADIR)/containerjob/slurm
	install -m 0755 bin/containerjob-init $(DESTDIR)$(LIBEXECDIR)/containerjob/containerjob-init
	for f in slurm-prolog slurm-epilog; do \
		$(SUBST) contrib/slurm/$$f > $(DESTDIR)$(LIBEXECDIR)/containerjob/$$f && \
		chmod 0755 $(DESTDIR)$(LIBEXECDIR)/containerjob/$$f; done
	for f in plugstack.conf slurm.conf.snippet; do \
		$(SUBST) contrib/slurm/$$f > $(DESTDIR)$(DATADIR)/containerjob/slurm/$$f; done
	install -m 0644 contrib/policy.toml $(DESTDIR)$(DATADIR)/containerjob/policy.toml.example
	install -d -m 0755 $(DESTDIR)$(LIBDIR)/systemd/system
	for f in containerjob-gc.service containerjob-gc.timer; do \
		$(SUBST) contrib/systemd/$$f > $(DESTDIR)$(LIBDIR)/systemd/system/$$f && \
		chmod 0644 $(DESTDIR)$(LIBDIR)/systemd/system/$$f; done
	install -d -m 0755 $(DESTDIR)$(DATADIR)/containerjob/pbs/torque
	$(SUBST) contrib/pbs/containerjob_hook.py > $(DESTDIR)$(DATADIR)/containerjob/pbs/containerjob_hook.py
	install -m 0644 contrib/pbs/job.pbs $(DESTDIR)$(DATADIR)/containerjob/pbs/
	install -m 0755 contrib/pbs/install-hook $(DESTDIR)$(DATADIR)/containerjob/pbs/
	for f in epilogue epilogue.parallel; do \
		$(SUBST) contrib/pbs/torque/$$f > $(DESTDIR)$(DATADIR)/containerjob/pbs/torque/$$f && \
		chmod 0755 $(DESTDIR)$(DATADIR)/containerjob/pbs/torque/$$f; done
	install -d -m 0755 $(DESTDIR)$(SYSCONFDIR)/containerjob
	[ -e $(DESTDIR)$(SYSCONFDIR)/containerjob/policy.toml ] || \
		install -m 0644 contrib/policy.toml $(DESTDIR)$(SYSCONFDIR)/containerjob/policy.toml
	install -d -m 0750 $(DESTDIR)$(SYSCONFDIR)/sudoers.d
	$(SUBST) contrib/sudoers.d/containerjob > $(DESTDIR)$(SYSCONFDIR)/sudoers.d/containerjob.tmp
	chmod 0440 $(DESTDIR)$(SYSCONFDIR)/sudoers.d/containerjob.tmp
	mv $(DESTDIR)$(SYSCONFDIR)/sudoers.d/containerjob.tmp $(DESTDIR)$(SYSCONFDIR)/sudoers.d/containerjob

# Benchmarks against the docker CLI on the same engine (docs/benchmarks.md).
# Not part of the tests: nothing asserts a time. PYXIS=DIR names a second
# test cluster whose plugstack loads pyxis (built by hand: docs/benchmarks.md
# §12), for the side-by-side section.
PYXIS ?=
bench: guide
	$(GO) run ./test/bench -bin /usr/bin/containerjob -out docs/benchmarks.md -raw bench-raw.txt $(if $(PYXIS),-pyxis $(PYXIS))

# Packages: the tree `make install` stages for /usr, packed by nfpm with
# the ownership and modes contrib/pkg/nfpm.yaml sets.
pkgroot:
	rm -rf $(PKGROOT)
	$(MAKE) install DESTDIR=$(PKGROOT) PREFIX=/usr LIBEXECDIR=/usr/libexec

deb rpm: pkgroot
	rm -f bin/containerjob*.$@
	PKGROOT=$(PKGROOT) PKG_VERSION=$(PKG_VERSION) $(NFPM) package --config contrib/pkg/nfpm.yaml --packager $@ --target bin/

# Fresh machine: Debian packages, then the engine.
deps:
	./contrib/dev/deps

services: deps
	./contrib/dev/start-docker

# The package, installed and wired into a bare single-node Slurm cluster by
# following the admin guide's own commands (contrib/dev/follow-guide):
# doctor green and a first containerized job as an ordinary user.
guide: services
	$(MAKE) testimage
	$(MAKE) deb
	BARE=1 CONTAINERJOB=/usr/bin/containerjob ./contrib/slurm/testcluster up
	SLURM_CONF=/run/containerjob-testcluster/slurm.conf ./contrib/dev/follow-guide docs/admin-guide.md bin
	SLURM_CONF=/run/containerjob-testcluster/slurm.conf ./contrib/dev/follow-guide docs/user-guide.md bin

# Everything CI runs: the guide on a fresh machine, then every test against
# the installed package.
check: lint guide rpm spank-check
	$(MAKE) test BINDIR=/usr/bin CONTAINERJOB_DEB=$(wildcard $(CURDIR)/bin/containerjob_*_amd64.deb) CONTAINERJOB_RPM=$(wildcard $(CURDIR)/bin/containerjob-*.x86_64.rpm)
	$(MAKE) lane-trixie
	$(MAKE) lane-forky
	$(MAKE) lane-engine
	$(MAKE) lane-cgroup2

# The other CI lanes, after the first lane's tests, each on a Debian
# release's own packages (contrib/dev/debian-lane): trixie (Slurm 24.11,
# Docker 26 with CDI) and forky (Slurm 26.05, Docker 28, containerd 2). The
# first lane's images are saved, its cluster and engine stopped (two
# engines on one machine fight over iptables), and the e2e suite runs in the
# release's root. They leave the first lane's engine and cluster stopped
# (`make services` and `testcluster up` start them again).
lane-prep: deb
	CGO_ENABLED=0 $(GO) test -c -tags e2e -o bin/e2e.test ./test/e2e
	@if docker info >/dev/null 2>&1; then \
		docker save -o bin/lane-images.tar alpine:3.20 mpi-test:1 && \
		./contrib/slurm/testcluster down && ./contrib/dev/stop-docker; fi

lane-trixie: lane-prep
	./contrib/dev/debian-lane trixie

lane-forky: lane-prep
	./contrib/dev/debian-lane forky

# The newest engine the module proxy builds (Docker 29's daemon, moby/moby
# v2) with its containerd image store, in the forky root: the integration
# and e2e tests of everything that keys on image IDs and digests.
lane-engine: lane-prep
	CGO_ENABLED=0 $(GO) test -c -tags integration -o bin/integration.test ./test/integration
	ENGINE=$$(GO=$(GO) ./contrib/dev/build-dockerd) ./contrib/dev/debian-lane forky

# An emulated machine (qemu, TCG) with systemd and pure cgroup v2, Docker's
# systemd cgroup driver and Slurm 26.05's cgroup/v2, from the forky
# packages: the e2e smoke subset of what differs there
# (contrib/dev/cgroup2-lane).
lane-cgroup2: lane-prep
	./contrib/dev/cgroup2-lane

# The main job on a fresh machine: a containerized Slurm job as a non-root user.
demo: guide
	./contrib/dev/demo

clean:
	rm -rf bin
