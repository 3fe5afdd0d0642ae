# containerjob build, test and install.
PREFIX     ?= /usr/local
BINDIR     ?= $(PREFIX)/bin
SYSCONFDIR ?= /etc
DESTDIR    ?=
SUDO_PATH  ?= /usr/bin/sudo
VERSION    ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
GO         ?= go
TESTIMAGE  ?= alpine:3.20

LDFLAGS := -s -w \
	-X main.sudoPath=$(SUDO_PATH) \
	-X main.selfPath=$(BINDIR)/containerjob \
	-X github.com/containerjob/containerjob/launcher.Version=$(VERSION)

.PHONY: all build test unit integration testimage install clean deps services check demo

all: build

build:
	CGO_ENABLED=1 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/containerjob ./cmd/containerjob

# Unit tests: pure, no engine, no scheduler.
unit:
	$(GO) test -count=1 ./...

# Integration tests need a running engine, the test image, the binary
# installed with its sudoers rule, and test users (see .ci/run).
integration: build
	CONTAINERJOB_BIN=$(BINDIR)/containerjob $(GO) test -count=1 -tags integration -v ./test/integration/...

test: unit integration

# A local image built from Debian's busybox-static: no registry needed.
testimage:
	./contrib/testimage/build $(TESTIMAGE)

install: build
	install -D -m 0755 bin/containerjob $(DESTDIR)$(BINDIR)/containerjob
	install -d -m 0755 $(DESTDIR)$(SYSCONFDIR)/containerjob
	[ -e $(DESTDIR)$(SYSCONFDIR)/containerjob/policy.toml ] || \
		install -m 0644 contrib/policy.toml $(DESTDIR)$(SYSCONFDIR)/containerjob/policy.toml
	install -d -m 0750 $(DESTDIR)$(SYSCONFDIR)/sudoers.d
	sed 's#@BINDIR@#$(BINDIR)#g' contrib/sudoers.d/containerjob > $(DESTDIR)$(SYSCONFDIR)/sudoers.d/containerjob.tmp
	chmod 0440 $(DESTDIR)$(SYSCONFDIR)/sudoers.d/containerjob.tmp
	mv $(DESTDIR)$(SYSCONFDIR)/sudoers.d/containerjob.tmp $(DESTDIR)$(SYSCONFDIR)/sudoers.d/containerjob

# Fresh machine: Debian packages, then the engine.
deps:
	./contrib/dev/deps

services: deps
	./contrib/dev/start-docker

# Everything CI runs: dependencies, services, image, install, all tests.
check: services
	$(MAKE) testimage
	$(MAKE) install
	$(MAKE) test

# The main job on a fresh machine: a containerized command as a non-root user.
demo: services
	$(MAKE) testimage
	$(MAKE) install
	./contrib/dev/demo

clean:
	rm -rf bin
