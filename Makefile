# aigw - an AI gateway.  See README.md; `make help` lists the targets.

PREFIX  ?= /usr/local
BINDIR  ?= $(PREFIX)/sbin
CTLDIR  ?= $(PREFIX)/bin
MANDIR  ?= $(PREFIX)/share/man
ETCDIR  ?= /etc/aigw
DESTDIR ?=
# systemd unit files: where this system's systemd looks for them.
ifeq ($(origin UNITDIR),undefined)
UNITDIR := $(or $(shell pkg-config --variable=systemdsystemunitdir systemd 2>/dev/null),/lib/systemd/system)
endif

BUILD   ?= build
CC      ?= cc
PKGS    := libcurl json-c yaml-0.1 libssl libcrypto libsystemd lmdb xlsxwriter libpcre2-8 zlib st

OPT     ?= -O2 -g
CFLAGS  += $(OPT) -std=gnu11 -Wall -Wextra -Werror -Wshadow -Wformat=2 -Wno-format-nonliteral \
           -D_GNU_SOURCE -I. $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LDLIBS  += $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lm

# HTTP/1.1 is read with llhttp, Node.js's parser (the successor of
# http_parser).  Debian ships it as C sources to build in (node-llhttp),
# as its own nodejs package does; they are compiled with their own flags.
LLHTTP_DIR ?= /usr/share/llhttp
LLHTTP_INC ?= /usr/share/include/llhttp
CFLAGS  += -I$(LLHTTP_INC)

SHM_SRC    := $(wildcard shm/*.c)
MASTER_SRC := $(filter-out master/main.c,$(wildcard master/*.c))
WORKER_SRC := $(wildcard worker/*.c worker/providers/*.c)
ADMIN_SRC  := $(wildcard admin/*.c)
MOCK_SRC   := $(wildcard tests/mock/*.c)
UNIT_SRC   := $(wildcard tests/unit/test_*.c)
FUZZ_SRC   := $(wildcard tests/fuzz/fuzz_*.c)

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))

LLHTTP_OBJ := $(BUILD)/obj/llhttp/api.o $(BUILD)/obj/llhttp/http.o $(BUILD)/obj/llhttp/llhttp.o
LIB_OBJ    := $(call obj,$(SHM_SRC) $(MASTER_SRC) $(WORKER_SRC)) $(LLHTTP_OBJ)
UNIT_BIN   := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRC))
FUZZ_BIN   := $(patsubst tests/fuzz/%.c,$(BUILD)/fuzz/%,$(FUZZ_SRC))

.PHONY: all asan deps run test units lint man-lint install uninstall clean help bench \
	fuzz fuzz-targets

all: $(BUILD)/aigwd $(BUILD)/aigwctl $(BUILD)/aigw-mock

help:
	@echo "make            build $(BUILD)/aigwd, $(BUILD)/aigwctl, $(BUILD)/aigw-mock"
	@echo "make run        install missing packages, build, start mock + aigwd (etc/aigw.dev.yaml)"
	@echo "make test       install missing packages, build, run unit tests, the fuzz targets'"
	@echo "                stored inputs and the integration tests"
	@echo "make asan       build with AddressSanitizer + UBSan into build/asan and run the tests"
	@echo "make fuzz       fuzz every parser of untrusted bytes, FUZZ_SECONDS each (tests/fuzz)"
	@echo "make install    install binaries, man pages, example config (PREFIX, DESTDIR)"
	@echo "make lint       clang-format check and mandoc -T lint"

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c -o $@ $<

$(BUILD)/obj/llhttp/%.o: $(LLHTTP_DIR)/%.c
	@mkdir -p $(dir $@)
	$(CC) $(OPT) -std=gnu11 -I$(LLHTTP_INC) -c -o $@ $<

# What a worker runs, runs on a connection's coroutine stack (256 KiB,
# worker/worker.c): no function of it may take more than 16 KiB of it.
$(BUILD)/obj/worker/%.o $(BUILD)/obj/shm/%.o: CFLAGS += -Wframe-larger-than=16384

$(BUILD)/libaigw.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/aigwd: $(call obj,master/main.c) $(BUILD)/libaigw.a
	$(CC) $(CFLAGS) -o $@ $^ $(LDFLAGS) $(LDLIBS)

$(BUILD)/aigwctl: $(call obj,$(ADMIN_SRC)) $(BUILD)/libaigw.a
	$(CC) $(CFLAGS) -o $@ $^ $(LDFLAGS) $(LDLIBS)

$(BUILD)/aigw-mock: $(call obj,$(MOCK_SRC)) $(BUILD)/libaigw.a
	$(CC) $(CFLAGS) -o $@ $^ $(LDFLAGS) $(LDLIBS) -lpthread

$(BUILD)/tests/%: $(call obj,tests/unit/%.c) $(BUILD)/libaigw.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $^ $(LDFLAGS) $(LDLIBS) -lcmocka

# A fuzz target: libFuzzer's main, the sanitizers, the library built with
# clang into its own tree (see fuzz-targets below).
$(BUILD)/fuzz/%: $(call obj,tests/fuzz/%.c) $(BUILD)/libaigw.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -fsanitize=fuzzer -o $@ $^ $(LDFLAGS) $(LDLIBS)

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)

# --- the two commands ------------------------------------------------------

deps:
	@tests/deps.sh build test

run: deps
	@$(MAKE) --no-print-directory all
	@tests/run-dev.sh $(BUILD)

test: deps
	@$(MAKE) --no-print-directory all units fuzz-targets
	@tests/run-tests.sh $(BUILD) $(FUZZ_BUILD)

units: $(UNIT_BIN)

# Sanitizer build: its own tree, so it never mixes objects with the
# normal build.  Runs the whole suite against the instrumented binaries.
asan: deps
	@$(MAKE) --no-print-directory BUILD=build/asan \
		OPT="-O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined" \
		LDFLAGS="-fsanitize=address,undefined" all units
	@ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
		tests/run-tests.sh build/asan

# The fuzz targets of tests/fuzz/: built with clang and libFuzzer into
# their own tree.  `make test` runs each over its stored corpus (every
# input that ever found a bug stays there); `make fuzz` searches for new
# ones for FUZZ_SECONDS a target.
FUZZ_BUILD   := build/fuzz
FUZZ_SECONDS ?= 60
FUZZ_OPT     := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
	-fno-sanitize-recover=undefined -fsanitize=fuzzer-no-link

fuzz-targets:
	@$(MAKE) --no-print-directory BUILD=$(FUZZ_BUILD) CC=clang OPT="$(FUZZ_OPT)" \
		LDFLAGS="-fsanitize=address,undefined" $(patsubst $(BUILD)/%,$(FUZZ_BUILD)/%,$(FUZZ_BIN))

fuzz: deps
	@$(MAKE) --no-print-directory fuzz-targets
	@tests/fuzz/run.sh fuzz $(FUZZ_BUILD) $(FUZZ_SECONDS)

bench:
	@tests/deps.sh build test bench
	@$(MAKE) --no-print-directory all
	@tests/bench/run.sh $(BUILD)

# --- checks ----------------------------------------------------------------

lint: man-lint
	@clang-format --dry-run -Werror $(SHM_SRC) $(MASTER_SRC) master/main.c $(WORKER_SRC) \
		$(ADMIN_SRC) $(MOCK_SRC) $(UNIT_SRC) $(FUZZ_SRC) shm/*.h master/*.h worker/*.h tests/fuzz/*.h

# Style notes too, but for two about this machine rather than the pages
# (cross references to pages not installed, a stale mandoc.db); and a
# quote left open ("`a, `b''"), which mandoc renders without a word when
# a line nests quoting macros.
MAN_PAGES := man/aigwd.8 man/aigwctl.8 man/aigw.yaml.5
man-lint:
	@mandoc -T lint -W warning $(MAN_PAGES)
	@! mandoc -T lint -W style $(MAN_PAGES) 2>&1 | \
		grep -v -e 'referenced manual not found' -e 'outdated mandoc.db' | grep .
	@for m in $(MAN_PAGES); do \
		open=$$(mandoc -T utf8 $$m | grep -n "‘[^’]*‘"); \
		[ -z "$$open" ] || { echo "$$m: a quote left open: $$open"; exit 1; }; \
	done

# --- install ---------------------------------------------------------------

install: all
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(CTLDIR) $(DESTDIR)$(MANDIR)/man8 \
		$(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(ETCDIR) $(DESTDIR)$(UNITDIR)
	install -m 0755 $(BUILD)/aigwd $(DESTDIR)$(BINDIR)/aigwd
	install -m 0755 $(BUILD)/aigwctl $(DESTDIR)$(CTLDIR)/aigwctl
	install -m 0644 man/aigwd.8 man/aigwctl.8 $(DESTDIR)$(MANDIR)/man8/
	install -m 0644 man/aigw.yaml.5 $(DESTDIR)$(MANDIR)/man5/
	@# The unit runs as the aigw user: let it read a new configuration.
	test -e $(DESTDIR)$(ETCDIR)/aigw.yaml || { \
		install -m 0640 etc/aigw.yaml $(DESTDIR)$(ETCDIR)/aigw.yaml && \
		if [ -z "$(DESTDIR)" ] && getent group aigw >/dev/null 2>&1; then \
			chgrp aigw $(ETCDIR)/aigw.yaml; fi; }
	@# The units name /usr/local/sbin/aigwd and /etc/aigw/: point them at
	@# BINDIR and ETCDIR.
	sed -e 's|/usr/local/sbin/aigwd|$(BINDIR)/aigwd|g' -e 's|/etc/aigw/|$(ETCDIR)/|g' \
		etc/aigw.service > $(BUILD)/aigw.service
	install -m 0644 $(BUILD)/aigw.service $(DESTDIR)$(UNITDIR)/aigw.service
	install -m 0644 etc/aigw.socket $(DESTDIR)$(UNITDIR)/aigw.socket

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/aigwd $(DESTDIR)$(CTLDIR)/aigwctl \
		$(DESTDIR)$(MANDIR)/man8/aigwd.8 $(DESTDIR)$(MANDIR)/man8/aigwctl.8 \
		$(DESTDIR)$(MANDIR)/man5/aigw.yaml.5 \
		$(DESTDIR)$(UNITDIR)/aigw.service $(DESTDIR)$(UNITDIR)/aigw.socket

clean:
	rm -rf $(BUILD)
