/* xxh3_64 compiled for AVX2 (about twice the speed on a 4 KiB bucket), used through
 * _xxh3.h only when the CPU has AVX2; everything else is built for the baseline x86-64 (SSE2). */
#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#pragma GCC target("avx2")
#define XXH_INLINE_ALL
#include <xxhash.h>

uint64_t fc_xxh3_64_avx2(const void *data, size_t len, uint64_t seed)
{
    uint64_t h = XXH3_64bits_withSeed(data, len, seed);
    /* GCC does not add vzeroupper under a target pragma: without it the SSE code that
     * runs next (the interpreter's) pays for the dirty upper halves, ~170 ns per call. */
    __asm__ volatile("vzeroupper" ::: "memory");
    return h;
}
#endif
