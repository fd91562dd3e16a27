// Function attributes for plain loops written for the vectoriser (model/ decode kernels, rollout/
// sampling): always-inline helpers, and one clone of a function per ISA picked at load time.
#pragma once

#if defined(__GNUC__) || defined(__clang__)
#define LIGHTRL_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define LIGHTRL_ALWAYS_INLINE inline
#endif

#if (defined(__x86_64__) || defined(_M_X64)) && defined(__GNUC__) && !defined(__clang__)
// One clone of the function per ISA, picked at load time (ifunc): plain loops then run 16/8/4
// fp32 lanes wide, with FMA where the CPU has it (the baseline x86-64 build has neither). GCC
// vectorises loops with a runtime trip count at -O3 only: compile such files with it.
#define LIGHTRL_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2,fma", "default")))
#else
#define LIGHTRL_VECTOR_CLONES
#endif
