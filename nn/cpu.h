/* nn/cpu.h - runtime instruction-set dispatch for the fast kernels (internal).
 *
 * One binary runs on any x86-64: kernels are compiled for several levels with per-function
 * target attributes and the level is chosen at first use from the CPU (AVX-512F, else
 * AVX2+FMA, else portable C). The environment variable NNC_ISA=avx512|avx2|generic forces a
 * lower (or equal) level; asking for a level the CPU lacks falls back to the best it has. The
 * AVX512_BF16 extension (BF16 kernels, nn/conv/bf16.c) is checked apart: nnc__isa_bf16.
 *
 * Thread-safety: nnc__isa() is safe from any thread; nnc__set_isa is for tests and must not
 * run concurrently with ops.
 */
#ifndef NNC_CPU_H
#define NNC_CPU_H

typedef enum nnc__isa_level { NNC_ISA_GENERIC = 0, NNC_ISA_AVX2 = 1, NNC_ISA_AVX512 = 2 } nnc__isa_level;

/* The level the kernels use now. */
nnc__isa_level nnc__isa(void);
/* The best level this CPU supports. */
nnc__isa_level nnc__isa_best(void);
/* Force a level (clamped to nnc__isa_best()); returns the level in effect. Tests only. */
nnc__isa_level nnc__set_isa(nnc__isa_level level);
const char *nnc__isa_name(nnc__isa_level level);
/* Whether the BF16 dot-product kernels (AVX512_BF16 vdpbf16ps) can run: the CPU has AVX512_BF16
 * (with AVX512BW/VL)
 * and the level in effect is AVX-512 (NNC_ISA=avx2 or generic turns them off as well). */
int nnc__isa_bf16(void);

#endif
