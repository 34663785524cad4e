# nnc - build, test, install, sanitizer and benchmark targets.
#   make                      build/libnnc.a, build/libnnc.so.$(VERSION), build/nnc.pc and ./nnc
#   make check                every Criterion test, the examples, and the install check (a temporary
#                             install, the README program and an outside program built through
#                             pkg-config against libnnc.a and libnnc.so); exits non-zero on failure
#   make install PREFIX=/usr/local [DESTDIR=...]   headers, libnnc.a, libnnc.so*, nnc, nnc.pc
#   make uninstall PREFIX=... [DESTDIR=...]        removes exactly what install put there
#   make SAN=address,undefined check    same under clang sanitizers, in build/san-address-undefined
#   make SAN=thread check-threads       ThreadSanitizer over the threaded tests
#   make bench                nnc vs PyTorch side by side (tools/bench.sh)
#   make fuzz                 libFuzzer harnesses {tools,tests}/fuzz/fuzz_*.c into build/fuzz/ (clang)
#   make fuzz-run FUZZ_TIME=60   run each harness that long over {tools,tests}/fuzz/corpus/<name>
#   make bench-loader         data-loader throughput (tests/bench/bench_loader.c)
#   make MPI=1                the MPI build (mpicc, dist/transport_mpi.c) in build/mpi: `mpirun ... nnc train`
#   make MPI=1 check-mpi      multi-rank tests (tests/dist/mpi_check.sh; needs libopenmpi-dev openmpi-bin)
#   make MPI=1 SAN=address,undefined check-mpi   the same under ASan+UBSan (leak checks off: Open MPI)
# Sources are found by wildcard: a new .c file in a module folder needs no Makefile edit.

comma := ,
SAN ?=
ifeq ($(SAN),)
  B := build
else
  B := build/san-$(subst $(comma),-,$(SAN))
  CC := clang
  SANFLAGS := -fsanitize=$(SAN) -fno-sanitize-recover=all -fno-omit-frame-pointer
  # Criterion 2.4.1 (its bundled BoxFort) leaks a 48-byte timeout request in the runner when
  # two tests with .timeout run at once; LeakSanitizer then fails the run. One job avoids it.
  SAN_TESTFLAGS := --jobs 1
endif

PKGS := openblas zlib libcurl libjpeg hwloc
# The version lives in nn/version.h alone; the soname carries the major number.
VERSION := $(shell sed -n 's/^\#define NNC_VERSION "\(.*\)"/\1/p' nn/version.h)
SOMAJOR := $(firstword $(subst ., ,$(VERSION)))
SONAME := libnnc.so.$(SOMAJOR)
WARN := -Wall -Wextra -Werror -Wno-unused-parameter
ifneq ($(findstring clang,$(shell $(CC) --version 2>/dev/null | head -1)),clang)
  WARN += -Wno-format-truncation
endif
# MPI=1: the same sources through mpicc (its compiler: CC, e.g. clang for SAN) plus
# dist/transport_mpi.c, into build/mpi (build/san-*-mpi with SAN).
MPI ?=
ifneq ($(MPI),)
  B := $(if $(SAN),$(B)-mpi,build/mpi)
  export OMPI_CC := $(CC)
  CC := mpicc
  MPIFLAGS := -DNNC_MPI
endif

CFLAGS ?= -O2 -g
# Every object is position-independent, so one set of objects makes both libnnc.a and
# libnnc.so (measured: no training slowdown against the default -fPIE objects; README "Installing").
ALL_CFLAGS := -std=c11 $(CFLAGS) $(WARN) -fPIC -D_GNU_SOURCE -pthread -I. $(SANFLAGS) $(MPIFLAGS) \
              $(shell pkg-config --cflags $(PKGS)) -I/usr/include/stb
LDLIBS := $(shell pkg-config --libs $(PKGS)) -lpthread -lm
TEST_LDLIBS := $(shell pkg-config --libs criterion)

MODULES := nn nn/conv optim data models dist
LIB_SRC := $(filter-out $(if $(MPI),,dist/transport_mpi.c),$(foreach m,$(MODULES),$(wildcard $(m)/*.c)))
CLI_SRC := $(wildcard tools/*.c)
TEST_SRC := $(wildcard tests/*/test_*.c) $(wildcard tests/common/*.c)
EXAMPLES := $(patsubst examples/%.c,$(B)/examples/%,$(wildcard examples/*.c))

# Release objects, and a testing variant compiled with -DNNC_TESTING (fault-injection hooks).
LIB_OBJ := $(patsubst %.c,$(B)/obj/%.o,$(LIB_SRC))
CLI_OBJ := $(patsubst %.c,$(B)/obj/%.o,$(CLI_SRC))
TLIB_OBJ := $(patsubst %.c,$(B)/tobj/%.o,$(LIB_SRC))
TCLI_OBJ := $(patsubst %.c,$(B)/tobj/%.o,$(CLI_SRC))
TEST_OBJ := $(patsubst %.c,$(B)/tobj/%.o,$(TEST_SRC))

.PHONY: FORCE all check check-install check-threads check-mpi bench bench-loader clean fuzz fuzz-run \
        install uninstall
all: $(B)/libnnc.a $(B)/nnc $(if $(SAN)$(MPI),,nnc $(B)/libnnc.so.$(VERSION) $(B)/nnc.pc)

# Objects depend on the compiler flags too: a flag change (CFLAGS=..., -fPIC) rebuilds them.
$(B)/cflags.txt: FORCE
	@mkdir -p $(B)
	@echo '$(CC) $(ALL_CFLAGS)' | cmp -s - $@ || echo '$(CC) $(ALL_CFLAGS)' >$@
FORCE:

$(B)/obj/%.o: %.c $(B)/cflags.txt
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -MMD -MP -c $< -o $@

$(B)/tobj/%.o: %.c $(B)/cflags.txt
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -DNNC_TESTING -MMD -MP -c $< -o $@

$(B)/libnnc.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

# The shared library: real name libnnc.so.X.Y.Z, soname libnnc.so.X, and the two links.
$(B)/libnnc.so.$(VERSION): $(LIB_OBJ)
	$(CC) $(ALL_CFLAGS) -shared -Wl,-soname,$(SONAME) -Wl,--no-undefined -o $@ $^ $(LDLIBS)
	ln -sf libnnc.so.$(VERSION) $(B)/$(SONAME)
	ln -sf $(SONAME) $(B)/libnnc.so

$(B)/libnnc_testing.a: $(TLIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(B)/nnc: $(CLI_OBJ) $(B)/libnnc.a
	$(CC) $(ALL_CFLAGS) -o $@ $(CLI_OBJ) $(B)/libnnc.a $(LDLIBS)

nnc: $(B)/nnc
	cp $< $@

# The CLI built with fault hooks, for tests that check exit codes under injected faults.
$(B)/test/nnc: $(TCLI_OBJ) $(B)/libnnc_testing.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $(TCLI_OBJ) $(B)/libnnc_testing.a $(LDLIBS)

# The CLI's code (all but main) as an archive, so tests can call its formatting and plotting.
$(B)/libnnc_cli_testing.a: $(filter-out %/main.o,$(TCLI_OBJ))
	@rm -f $@
	ar rcs $@ $^

$(B)/test/nnc_tests: $(TEST_OBJ) $(B)/libnnc_cli_testing.a $(B)/libnnc_testing.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $(TEST_OBJ) $(B)/libnnc_cli_testing.a $(B)/libnnc_testing.a $(TEST_LDLIBS) $(LDLIBS)

# Examples include only the umbrella header and link the release library.
$(B)/examples/%: examples/%.c $(B)/libnnc.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(B)/libnnc.a $(LDLIBS)

check: $(B)/test/nnc_tests $(B)/test/nnc $(B)/nnc $(EXAMPLES) $(if $(SAN)$(MPI),,check-install)
	@for e in $(EXAMPLES); do echo "== example $$e"; (cd $(B) && $(CURDIR)/$$e) || exit 1; done
	NNC_BIN=$(B)/test/nnc NNC_RELEASE_BIN=$(B)/nnc $(B)/test/nnc_tests $(SAN_TESTFLAGS) $(TESTFLAGS)

# ---- packaging ----
# PREFIX/include/nnc/{nn,optim,data,models,dist}/*.h (the headers nn/nnc.h reaches, with their
# repository paths, so `#include "nn/nnc.h"` works as in the tree) plus PREFIX/include/nnc/nnc.h
# (`#include <nnc.h>`); PREFIX/lib/libnnc.a, libnnc.so*; PREFIX/bin/nnc; PREFIX/lib/pkgconfig/nnc.pc
# (Cflags -I${includedir}/nnc). DESTDIR stages the tree elsewhere (packagers); nnc.pc names PREFIX.
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
# nnc.pc: libcurl goes into Libs.private by name, not into Requires.private: `pkg-config --static`
# would otherwise add curl's own private list (nghttp2, rtmp, ldap, ...), whose static libraries
# distributions do not ship, and a static link against libnnc.a would fail for no reason.
# hwloc likewise: its private list names -ludev, whose development files are another package.
# The public headers: nn/nnc.h and everything it includes from the repository.
PUBLIC_H = $(sort $(filter-out /%,$(subst \,,$(filter %.h,$(shell $(CC) -MM -I. nn/nnc.h)))))

$(B)/nnc.pc: nn/version.h Makefile
	@mkdir -p $(B)
	@printf '%s\n' 'prefix=$(PREFIX)' 'exec_prefix=$${prefix}' 'libdir=$(patsubst $(PREFIX)%,$${exec_prefix}%,$(LIBDIR))' \
	  'includedir=$(patsubst $(PREFIX)%,$${prefix}%,$(INCLUDEDIR))' '' 'Name: nnc' \
	  'Description: CNN training on the CPU with GRAWA and other distributed algorithms' \
	  'Version: $(VERSION)' 'Requires.private: $(filter-out libcurl hwloc,$(PKGS))' 'Cflags: -I$${includedir}/nnc' \
	  'Libs: -L$${libdir} -lnnc' 'Libs.private: -lcurl -lhwloc -lpthread -lm' >$@.tmp
	@if cmp -s $@.tmp $@; then rm $@.tmp; else mv $@.tmp $@; echo "wrote $@ (prefix $(PREFIX))"; fi

# nnc.pc is rewritten when PREFIX changes (so `make install PREFIX=...` never installs a stale one).
.PHONY: $(B)/nnc.pc

ifneq ($(SAN)$(MPI),)
ifneq ($(filter install uninstall check-install,$(MAKECMDGOALS)),)
$(error install, uninstall and check-install are for the plain build (without SAN= or MPI=))
endif
endif

install: $(B)/libnnc.a $(B)/libnnc.so.$(VERSION) $(B)/nnc $(B)/nnc.pc
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR) $(DESTDIR)$(PKGCONFIGDIR) \
	  $(addprefix $(DESTDIR)$(INCLUDEDIR)/nnc/,$(sort $(dir $(PUBLIC_H))))
	for h in $(PUBLIC_H); do install -m 644 $$h $(DESTDIR)$(INCLUDEDIR)/nnc/$$h || exit 1; done
	printf '%s\n' '/* nnc.h - convenience include: #include <nnc.h> with pkg-config --cflags nnc. */' \
	  '#include "nn/nnc.h"' >$(DESTDIR)$(INCLUDEDIR)/nnc/nnc.h
	install -m 644 $(B)/libnnc.a $(DESTDIR)$(LIBDIR)/libnnc.a
	install -m 755 $(B)/libnnc.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libnnc.so.$(VERSION)
	ln -sf libnnc.so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(LIBDIR)/libnnc.so
	install -m 755 $(B)/nnc $(DESTDIR)$(BINDIR)/nnc
	install -m 644 $(B)/nnc.pc $(DESTDIR)$(PKGCONFIGDIR)/nnc.pc

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/nnc $(DESTDIR)$(LIBDIR)/libnnc.a $(DESTDIR)$(LIBDIR)/libnnc.so \
	  $(DESTDIR)$(LIBDIR)/$(SONAME) $(DESTDIR)$(LIBDIR)/libnnc.so.$(VERSION) $(DESTDIR)$(PKGCONFIGDIR)/nnc.pc
	rm -rf $(DESTDIR)$(INCLUDEDIR)/nnc

# Installs into a temporary prefix (and a DESTDIR staging), builds the README's program and the
# examples with the compile lines they show, and an outside program against libnnc.a and
# libnnc.so through pkg-config; checks nnc_version() == NNC_VERSION, then uninstalls.
check-install: $(B)/libnnc.a $(B)/libnnc.so.$(VERSION) $(B)/nnc
	MAKE="$(MAKE)" CC="$(CC)" tests/install_check.sh

# ThreadSanitizer run over the threaded suites only (use with SAN=thread).
# Criterion cannot start under TSan (its inheritable-arena mmap fails once TSan has reserved the
# address space: Snaipe/Criterion#274), so the threaded scenarios run as a plain program.
$(B)/test/dist_tsan: tests/dist/tsan_main.c $(B)/libnnc_testing.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -DNNC_TESTING -o $@ $< $(B)/libnnc_testing.a $(LDLIBS)

check-threads: $(B)/test/dist_tsan
	$(B)/test/dist_tsan

# Multi-rank runs through mpirun (docs/testing.md): the fault-hook CLI and the release one.
# The threads-only reference run (each MPI run must match it bit for bit) is the plain build/nnc.
check-mpi: $(B)/test/nnc $(B)/nnc
ifeq ($(MPI),)
	@echo "check-mpi needs the MPI build: make MPI=1 check-mpi"; exit 2
endif
	$(MAKE) MPI= SAN= CC=cc build/nnc
	$(if $(SAN),ASAN_OPTIONS=detect_leaks=0) tests/dist/mpi_check.sh $(B)/test/nnc $(B)/nnc build/nnc

bench: $(B)/nnc
	tools/bench.sh $(B)/nnc

# Data-loader throughput (images/s, one consumer thread; see tests/bench/bench_loader.c).
$(B)/bench_loader: tests/bench/bench_loader.c $(B)/libnnc.a
	$(CC) $(ALL_CFLAGS) -o $@ $< $(B)/libnnc.a $(LDLIBS)

bench-loader: $(B)/bench_loader
	$(B)/bench_loader

# Fuzzing (parsers of files from outside: checkpoints, CIFAR, IDX, images, tar): the library rebuilt with coverage + ASan/UBSan, one binary per
# tools/fuzz/fuzz_<name>.c and tests/fuzz/fuzz_<name>.c (data parsers). fuzz-run keeps new
# inputs in build/fuzz/corpus-<name>, reading the committed seeds (and crash regressions) in
# tools/fuzz/corpus/<name> or tests/fuzz/corpus/<name> without writing to them.
FUZZ_SRC := $(wildcard tools/fuzz/fuzz_*.c tests/fuzz/fuzz_*.c)
FUZZ_BIN := $(addprefix build/fuzz/,$(basename $(notdir $(FUZZ_SRC))))
FUZZ_CFLAGS := -std=c11 -O1 -g -Wall -Wextra -Werror -Wno-unused-parameter -D_GNU_SOURCE -pthread -I. \
               -fno-omit-frame-pointer -fno-sanitize-recover=all $(shell pkg-config --cflags $(PKGS)) \
               -I/usr/include/stb
FUZZ_TIME ?= 60
# Per-input limit: generous, so a loaded CI machine does not report a scheduler stall as a slow
# input (inputs run in milliseconds; a 10 s input is a hang).
FUZZ_UNIT_TIMEOUT ?= 10

build/fuzz/obj/%.o: %.c
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link,address,undefined -MMD -MP -c $< -o $@

build/fuzz/libnnc_fuzz.a: $(patsubst %.c,build/fuzz/obj/%.o,$(LIB_SRC))
	@rm -f $@
	ar rcs $@ $^

build/fuzz/%: tools/fuzz/%.c build/fuzz/libnnc_fuzz.a
	clang $(FUZZ_CFLAGS) -fsanitize=fuzzer,address,undefined -o $@ $< build/fuzz/libnnc_fuzz.a $(LDLIBS)

build/fuzz/%: tests/fuzz/%.c build/fuzz/libnnc_fuzz.a
	clang $(FUZZ_CFLAGS) -fsanitize=fuzzer,address,undefined -o $@ $< build/fuzz/libnnc_fuzz.a $(LDLIBS)

fuzz: $(FUZZ_BIN)

fuzz-run: $(FUZZ_BIN)
	@for f in $(FUZZ_BIN); do n=$${f#build/fuzz/fuzz_}; mkdir -p build/fuzz/corpus-$$n; \
	  echo "== fuzz $$n for $(FUZZ_TIME) s"; \
	  $$f -max_total_time=$(FUZZ_TIME) -timeout=$(FUZZ_UNIT_TIMEOUT) -malloc_limit_mb=256 -rss_limit_mb=2048 \
	      -print_final_stats=1 build/fuzz/corpus-$$n \
	      $$(for d in tools/fuzz/corpus/$$n tests/fuzz/corpus/$$n; do [ -d $$d ] && echo $$d; done) || exit 1; done

clean:
	rm -rf build nnc

-include $(shell find $(B) -name '*.d' 2>/dev/null)
