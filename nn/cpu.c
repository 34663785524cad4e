/* nn/cpu.c - CPU feature detection and the NNC_ISA override (see nn/cpu.h). */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "nn/cpu.h"

static atomic_int current = -1;

nnc__isa_level nnc__isa_best(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return NNC_ISA_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return NNC_ISA_AVX2;
#endif
    return NNC_ISA_GENERIC;
}

nnc__isa_level nnc__set_isa(nnc__isa_level level)
{
    nnc__isa_level best = nnc__isa_best();
    if (level > best) level = best;
    if (level < NNC_ISA_GENERIC) level = NNC_ISA_GENERIC;
    atomic_store(&current, (int)level);
    return level;
}

nnc__isa_level nnc__isa(void)
{
    int c = atomic_load_explicit(&current, memory_order_relaxed);
    if (c >= 0) return (nnc__isa_level)c;
    nnc__isa_level want = NNC_ISA_AVX512;
    const char *e = getenv("NNC_ISA");
    if (e && !strcmp(e, "generic")) want = NNC_ISA_GENERIC;
    else if (e && !strcmp(e, "avx2")) want = NNC_ISA_AVX2;
    return nnc__set_isa(want);
}

const char *nnc__isa_name(nnc__isa_level level)
{
    return level == NNC_ISA_AVX512 ? "avx512" : level == NNC_ISA_AVX2 ? "avx2" : "generic";
}

int nnc__isa_bf16(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    return nnc__isa() == NNC_ISA_AVX512 && __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl");
#else
    return 0;
#endif
}
