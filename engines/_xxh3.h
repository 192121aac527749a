/* xxh3_64 for the engines' C (BigHash's buckets and bloom filters, BlockCache's entries):
 * xxHash's header inlined (Debian libxxhash-dev: no library to link), and for inputs over
 * 240 bytes the AVX2 build in _xxh3_avx2.c when the CPU has AVX2 (about twice the speed on
 * a 4 KiB bucket). A C file that hashes includes this and compiles _xxh3_avx2.c in. */
#ifndef FC_XXH3_H
#define FC_XXH3_H

#include <stddef.h>
#include <stdint.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
uint64_t fc_xxh3_64_avx2(const void *data, size_t len, uint64_t seed);

/* Inputs up to 240 bytes take no vector code, so they stay inline here. */
static inline uint64_t fc_hash(const void *p, size_t n, uint64_t seed)
{
    static int have_avx2 = -1;
    if (n > 240) {
        if (have_avx2 < 0)
            have_avx2 = __builtin_cpu_supports("avx2") ? 1 : 0;  /* a benign race: same value */
        if (have_avx2)
            return fc_xxh3_64_avx2(p, n, seed);
    }
    return XXH3_64bits_withSeed(p, n, seed);
}
#else
static inline uint64_t fc_hash(const void *p, size_t n, uint64_t seed)
{
    return XXH3_64bits_withSeed(p, n, seed);
}
#endif

#endif
