# nnc - build, test, sanitizer and benchmark targets.
#   make                      build/libnnc.a and ./nnc
#   make check                every Criterion test + the embedding example (exit non-zero on failure)
#   make SAN=address,undefined check    same under clang sanitizers, in build/san-address-undefined
#   make SAN=thread check-threads       ThreadSanitizer over the threaded tests
#   make bench                nnc vs PyTorch side by side (tools/bench.sh)
# Sources are found by wildcard: a new .c file in a module folder needs no Makefile edit.

comma := ,
SAN ?=
ifeq ($(SAN),)
  B := build
else
  B := build/san-$(subst $(comma),-,$(SAN))
  CC := clang
  SANFLAGS := -fsanitize=$(SAN) -fno-sanitize-recover=all -fno-omit-frame-pointer
endif

PKGS := openblas zlib libcurl
WARN := -Wall -Wextra -Werror -Wno-unused-parameter
ifneq ($(findstring clang,$(shell $(CC) --version 2>/dev/null | head -1)),clang)
  WARN += -Wno-format-truncation
endif
CFLAGS ?= -O2 -g
ALL_CFLAGS := -std=c11 $(CFLAGS) $(WARN) -D_GNU_SOURCE -pthread -I. $(SANFLAGS) \
              $(shell pkg-config --cflags $(PKGS)) -I/usr/include/stb
LDLIBS := $(shell pkg-config --libs $(PKGS)) -lpthread -lm
TEST_LDLIBS := $(shell pkg-config --libs criterion)

MODULES := nn optim data models dist
LIB_SRC := $(foreach m,$(MODULES),$(wildcard $(m)/*.c))
CLI_SRC := $(wildcard tools/*.c)
TEST_SRC := $(wildcard tests/*/test_*.c) $(wildcard tests/common/*.c)
EXAMPLES := $(patsubst examples/%.c,$(B)/examples/%,$(wildcard examples/*.c))

# Release objects, and a testing variant compiled with -DNNC_TESTING (fault-injection hooks).
LIB_OBJ := $(patsubst %.c,$(B)/obj/%.o,$(LIB_SRC))
CLI_OBJ := $(patsubst %.c,$(B)/obj/%.o,$(CLI_SRC))
TLIB_OBJ := $(patsubst %.c,$(B)/tobj/%.o,$(LIB_SRC))
TCLI_OBJ := $(patsubst %.c,$(B)/tobj/%.o,$(CLI_SRC))
TEST_OBJ := $(patsubst %.c,$(B)/tobj/%.o,$(TEST_SRC))

.PHONY: all check check-threads bench bench-loader clean fuzz
all: $(B)/libnnc.a $(B)/nnc $(if $(SAN),,nnc)

$(B)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -MMD -MP -c $< -o $@

$(B)/tobj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -DNNC_TESTING -MMD -MP -c $< -o $@

$(B)/libnnc.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

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

$(B)/test/nnc_tests: $(TEST_OBJ) $(B)/libnnc_testing.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $(TEST_OBJ) $(B)/libnnc_testing.a $(TEST_LDLIBS) $(LDLIBS)

# Examples include only the umbrella header and link the release library.
$(B)/examples/%: examples/%.c $(B)/libnnc.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(B)/libnnc.a $(LDLIBS)

check: $(B)/test/nnc_tests $(B)/test/nnc $(B)/nnc $(EXAMPLES)
	@for e in $(EXAMPLES); do echo "== example $$e"; (cd $(B) && ../$$e) || exit 1; done
	NNC_BIN=$(B)/test/nnc NNC_RELEASE_BIN=$(B)/nnc $(B)/test/nnc_tests $(TESTFLAGS)

# ThreadSanitizer run over the threaded suites only (use with SAN=thread).
check-threads: $(B)/test/nnc_tests $(B)/test/nnc
	NNC_BIN=$(B)/test/nnc $(B)/test/nnc_tests --filter='dist*/*' $(TESTFLAGS)

bench: $(B)/nnc
	tools/bench.sh $(B)/nnc

# Data-loader throughput (images/s, one consumer thread; see tests/bench/bench_loader.c).
$(B)/bench_loader: tests/bench/bench_loader.c $(B)/libnnc.a
	$(CC) $(ALL_CFLAGS) -o $@ $< $(B)/libnnc.a $(LDLIBS)

bench-loader: $(B)/bench_loader
	$(B)/bench_loader

# libFuzzer harnesses (clang): every tests/fuzz/fuzz_*.c is built with ASan+UBSan against the
# library sources and run for FUZZ_SECONDS each, seeded from tests/fuzz/corpus/<name>/ (new
# inputs go to build/fuzz/corpus-<name>/). Crash reproducers land in build/fuzz/.
FUZZ_SECONDS ?= 60
FUZZ_SRC := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BIN := $(patsubst tests/fuzz/%.c,build/fuzz/%,$(FUZZ_SRC))
FUZZ_FLAGS := -std=c11 -O1 -g -D_GNU_SOURCE -pthread -I. -I/usr/include/stb \
              $(shell pkg-config --cflags $(PKGS)) -fsanitize=fuzzer,address,undefined \
              -fno-sanitize-recover=all

build/fuzz/%: tests/fuzz/%.c $(LIB_SRC) $(wildcard */*.h)
	@mkdir -p $(dir $@)
	clang $(FUZZ_FLAGS) -o $@ $< $(LIB_SRC) $(LDLIBS)

fuzz: $(FUZZ_BIN)
	@for f in $(FUZZ_BIN); do n=$$(basename $$f); mkdir -p build/fuzz/corpus-$$n tests/fuzz/corpus/$$n; \
	  echo "== $$n ($(FUZZ_SECONDS) s)"; \
	  (cd build/fuzz && ./$$n -max_total_time=$(FUZZ_SECONDS) -timeout=1 -malloc_limit_mb=512 \
	     -rss_limit_mb=2048 -print_final_stats=1 corpus-$$n ../../tests/fuzz/corpus/$$n) || exit 1; done

clean:
	rm -rf build nnc

-include $(shell find $(B) -name '*.d' 2>/dev/null)
