/* BigHash's bucket and bloom filter hot paths (see _bucket.h and bighash.py's docstring).
 * Every function works only on the buffers it is handed: no state, no allocation. The
 * cffi module keeps the GIL during calls (see _bucket_build.py), so each call is atomic
 * to other Python threads, as the Python code it replaced was. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "_xxh3.h"
#include "_bucket.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the bucket layout is little-endian; this code assumes a little-endian host"
#endif

#define hash fc_hash

const uint64_t fc_key_seed = 0x6A09E667F3BCC908ull;
const uint64_t fc_checksum_seed = 0xBB67AE8584CAA73Bull;

#define HSIZE ((uint32_t)FC_BH_SIZE)
#define ESIZE ((uint32_t)FC_BE_SIZE)
#define VERSION FC_BH_FORMAT_VERSION
const char fc_bucket_magic[4] = {'F', 'C', 'B', 'H'};
#define MAGIC fc_bucket_magic

static inline uint16_t ld16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static inline uint32_t ld32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline uint64_t ld64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static inline void st16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }
static inline void st32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static inline void st64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }

/* One entry's header, decoded. */
typedef struct {
    uint64_t kh;
    uint32_t vsum, expiry, vlen, klen;
} entry;

static inline void ld_entry(const uint8_t *p, entry *e)
{
    e->kh = ld64(p + FC_BE_KEY_HASH);
    e->vsum = ld32(p + FC_BE_VALUE_SUM);
    e->expiry = ld32(p + FC_BE_EXPIRY);
    e->vlen = ld32(p + FC_BE_VALUE_LEN);
    e->klen = ld16(p + FC_BE_KEY_LEN);
}

static int all_zero(const uint8_t *p, uint32_t n)
{
    /* size is a multiple of 512: compare in 8-byte words */
    uint64_t acc = 0;
    for (uint32_t i = 0; i + 8 <= n; i += 8)
        acc |= ld64(p + i);
    for (uint32_t i = n & ~7u; i < n; i++)
        acc |= p[i];
    return acc == 0;
}

/* The bucket checksum: bytes [FC_BH_GENERATION, header end + used) (the generation, the
 * count, the used bytes and the entries), seeded with the bucket index. */
static inline uint64_t sum_of(const uint8_t *d, uint32_t used, uint32_t bucket)
{
    return hash(d + FC_BH_GENERATION, HSIZE - FC_BH_GENERATION + (size_t)used, fc_checksum_seed ^ bucket);
}

/* Validate the image; FC_OK with *count / *used (0 / 0 for an all-zero image) or a reason. */
static int check(const uint8_t *d, uint32_t size, uint32_t bucket, uint64_t generation,
                 uint32_t *count, uint32_t *used, uint32_t *aux)
{
    *count = 0;
    *used = 0;
    if (size < HSIZE)
        return FC_BAD_USED;
    if (memcmp(d + FC_BH_MAGIC, MAGIC, 4) != 0)
        return all_zero(d, size) ? FC_OK : FC_BAD_MAGIC;
    if (ld16(d + FC_BH_VERSION) != VERSION || ld16(d + FC_BH_HEADER_SIZE) != HSIZE)
        return FC_BAD_VERSION;
    uint32_t n = ld32(d + FC_BH_ITEM_COUNT), u = ld32(d + FC_BH_USED_BYTES);
    if (u > size - HSIZE)
        return FC_BAD_USED;
    if (sum_of(d, u, bucket) != ld64(d + FC_BH_CHECKSUM))
        return FC_BAD_CHECKSUM;
    if (ld64(d + FC_BH_GENERATION) != generation)
        return FC_STALE;
    uint64_t pos = HSIZE, end = HSIZE + (uint64_t)u;
    for (uint32_t i = 0; i < n; i++) {
        if (pos + ESIZE > end)
            return FC_OVERRUN;
        uint64_t nxt = pos + ESIZE + ld16(d + pos + FC_BE_KEY_LEN) + (uint64_t)ld32(d + pos + FC_BE_VALUE_LEN);
        if (nxt > end)
            return FC_OVERRUN;
        pos = nxt;
    }
    if (pos != end) {
        *aux = (uint32_t)(pos - HSIZE);
        return FC_BAD_END;
    }
    *count = n;
    *used = u;
    return FC_OK;
}

static void learn_image(fc_bloom *bf, uint32_t bucket, const uint8_t *d, uint32_t size, int valid);

int fc_bucket_check(const char *data, uint32_t size, uint32_t bucket, uint64_t generation, uint32_t *aux)
{
    uint32_t n, u;
    *aux = 0;
    return check((const uint8_t *)data, size, bucket, generation, &n, &u, aux);
}

uint64_t fc_xxh3_64(const char *data, size_t len, uint64_t seed)
{
    return hash(data, len, seed);
}

static inline int key_matches(const uint8_t *d, uint32_t pos, const entry *e, uint64_t kh,
                              const uint8_t *key, uint32_t klen)
{
    return e->kh == kh && e->klen == klen && memcmp(d + pos + ESIZE, key, klen) == 0;
}

/* The offset of the last entry of ``key`` in a validated bucket of ``n`` entries (the last
 * one decides, as a lookup finds it), or 0 when it is not there; *index gets its index. */
static uint32_t find_key(const uint8_t *d, uint32_t n, uint64_t kh, const uint8_t *key, uint32_t klen,
                         uint32_t *index)
{
    uint32_t pos = HSIZE, hit = 0;
    entry e;
    *index = 0;
    for (uint32_t i = 0; i < n; i++) {
        ld_entry(d + pos, &e);
        if (key_matches(d, pos, &e, kh, key, klen)) {
            hit = pos;
            *index = i;
        }
        pos += ESIZE + e.klen + e.vlen;
    }
    return hit;
}

uint64_t fc_bucket_of(uint64_t kh, uint64_t nbuckets, int linear)
{
    uint64_t h = kh >> 32;
    if (!linear)
        return h * nbuckets >> 32;
    uint64_t m = nbuckets;          /* the largest power of two <= nbuckets */
    m |= m >> 1, m |= m >> 2, m |= m >> 4, m |= m >> 8, m |= m >> 16, m |= m >> 32;
    m -= m >> 1;
    uint64_t b = h & (2 * m - 1);
    return b >= nbuckets ? b - m : b;
}

/* Whether an entry of key hash ``kh`` belongs in ``bucket`` (see fc_bucket_of). */
static inline int owned(uint64_t kh, uint32_t bucket, uint64_t nbuckets, int linear)
{
    return fc_bucket_of(kh, nbuckets, linear) == bucket;
}

static inline int was_hit(uint64_t hits, uint32_t i)
{
    return i < 64 && (hits >> i & 1);
}

static inline int expired(uint32_t expiry, double now)
{
    return expiry != 0 && (double)expiry <= now;
}

int64_t fc_bucket_lookup(const char *data, uint32_t size, uint32_t bucket, uint64_t generation,
                         uint64_t kh, const char *key, uint32_t klen, fc_bloom *learn, uint64_t *hits)
{
    const uint8_t *d = (const uint8_t *)data;
    uint32_t n, used, aux, index;
    int why = check(d, size, bucket, generation, &n, &used, &aux);
    if (learn)
        learn_image(learn, bucket, d, size, why == FC_OK);
    if (why != FC_OK)
        return -why;
    uint32_t hit = find_key(d, n, kh, (const uint8_t *)key, klen, &index);
    entry e;
    if (!hit)
        return 0;
    if (hits && index < 64)
        *hits |= 1ull << index;
    ld_entry(d + hit, &e);
    uint64_t vsum = hash(d + hit + ESIZE + e.klen, e.vlen, fc_key_seed) & 0xFFFFFFFFu;
    return (int64_t)(hit + ESIZE + e.klen) | ((int64_t)e.vlen << FC_VLEN_SHIFT) | ((int64_t)e.klen << FC_KLEN_SHIFT)
           | FC_FOUND | (vsum == e.vsum ? FC_SUM_OK : 0) | (e.expiry ? FC_HAS_EXPIRY : 0);
}

/* Header + zero tail + checksum of an image whose entries fill [32, 32 + used). */
static void finish(uint8_t *o, uint32_t size, uint32_t bucket, uint64_t generation, uint32_t count, uint32_t used)
{
    memcpy(o + FC_BH_MAGIC, MAGIC, 4);
    st16(o + FC_BH_VERSION, VERSION);
    st16(o + FC_BH_HEADER_SIZE, HSIZE);
    st64(o + FC_BH_GENERATION, generation);
    st32(o + FC_BH_ITEM_COUNT, count);
    st32(o + FC_BH_USED_BYTES, used);
    memset(o + HSIZE + used, 0, size - HSIZE - used);
    st64(o + FC_BH_CHECKSUM, sum_of(o, used, bucket));
}

int64_t fc_bucket_insert(const char *old, char *out, uint32_t size, uint32_t bucket, uint64_t generation,
                         double now, uint64_t kh, const char *key, uint32_t klen,
                         const char *value, uint32_t vlen, uint32_t expiry, uint64_t hits,
                         uint64_t nbuckets, int linear)
{
    const uint8_t *d = (const uint8_t *)old;
    uint8_t *o = (uint8_t *)out;
    uint64_t need = ESIZE + (uint64_t)klen + vlen;
    if (size < HSIZE || klen > 0xFFFF || need > size - HSIZE)
        return -1;
    uint32_t n, used, aux;
    int why = check(d, size, bucket, generation, &n, &used, &aux);
    if (why != FC_OK)
        n = 0;
    /* pass 1: what survives the key's own, the expired and the foreign entries */
    uint64_t kept_used = 0;
    uint32_t replaced = 0, nexpired = 0, count = 0, foreign = 0;
    uint32_t pos = HSIZE;
    entry e;
    for (uint32_t i = 0; i < n; i++) {
        ld_entry(d + pos, &e);
        uint32_t len = ESIZE + e.klen + e.vlen;
        if (key_matches(d, pos, &e, kh, (const uint8_t *)key, klen))
            replaced = 1;
        else if (expired(e.expiry, now))
            nexpired++;
        else if (!owned(e.kh, bucket, nbuckets, linear))
            foreign++;
        else
            kept_used += len;
        pos += len;
    }
    /* pass 2: how many survivors go until the new entry fits: drop[0] of those not hit
     * (oldest first), then, only if that is not enough, drop[1] of the hit ones */
    uint64_t room = size - HSIZE - need;
    uint32_t drop[2] = {0, 0};
    for (int hit = 0; hit < 2 && kept_used > room; hit++) {
        pos = HSIZE;
        for (uint32_t i = 0; i < n && kept_used > room; i++) {
            ld_entry(d + pos, &e);
            uint32_t len = ESIZE + e.klen + e.vlen;
            if (!key_matches(d, pos, &e, kh, (const uint8_t *)key, klen) && !expired(e.expiry, now)
                && owned(e.kh, bucket, nbuckets, linear) && was_hit(hits, i) == hit) {
                kept_used -= len;
                drop[hit]++;
            }
            pos += len;
        }
    }
    /* pass 3: copy the survivors not hit, then the hit ones, each oldest first */
    uint32_t w = HSIZE;
    for (int hit = 0; hit < 2; hit++) {
        uint32_t seen = 0;
        pos = HSIZE;
        for (uint32_t i = 0; i < n; i++) {
            ld_entry(d + pos, &e);
            uint32_t len = ESIZE + e.klen + e.vlen;
            if (!key_matches(d, pos, &e, kh, (const uint8_t *)key, klen) && !expired(e.expiry, now)
                && owned(e.kh, bucket, nbuckets, linear) && was_hit(hits, i) == hit && seen++ >= drop[hit]) {
                memcpy(o + w, d + pos, len);
                w += len;
                count++;
            }
            pos += len;
        }
    }
    uint32_t evicted = drop[0] + drop[1] + foreign;
    st64(o + w + FC_BE_KEY_HASH, kh);
    st32(o + w + FC_BE_VALUE_SUM, (uint32_t)(hash(value, vlen, fc_key_seed) & 0xFFFFFFFFu));
    st32(o + w + FC_BE_EXPIRY, expiry);
    st32(o + w + FC_BE_VALUE_LEN, vlen);
    st16(o + w + FC_BE_KEY_LEN, (uint16_t)klen);
    memcpy(o + w + ESIZE, key, klen);
    memcpy(o + w + ESIZE + klen, value, vlen);
    w += (uint32_t)need;
    finish(o, size, bucket, generation, count + 1, w - HSIZE);
    return (int64_t)why | (replaced ? FC_REPLACED : 0) | ((int64_t)evicted << FC_EVICTED_SHIFT)
           | ((int64_t)nexpired << FC_EXPIRED_SHIFT);
}

int64_t fc_bucket_remove(const char *old, char *out, uint32_t size, uint32_t bucket, uint64_t generation,
                         double now, uint64_t kh, const char *key, uint32_t klen, fc_bloom *learn,
                         uint64_t *hits, uint64_t nbuckets, int linear)
{
    const uint8_t *d = (const uint8_t *)old;
    uint8_t *o = (uint8_t *)out;
    uint32_t n, used, aux, index;
    int why = check(d, size, bucket, generation, &n, &used, &aux);
    if (learn)
        learn_image(learn, bucket, d, size, why == FC_OK);
    if (why != FC_OK || n == 0)
        return why;
    /* the last entry of the key decides (as a lookup would find it) */
    uint32_t hit = find_key(d, n, kh, (const uint8_t *)key, klen, &index);
    entry e;
    if (!hit)
        return why;
    ld_entry(d + hit, &e);
    if (expired(e.expiry, now))
        return why;
    uint32_t w = HSIZE, count = 0;
    uint32_t pos = HSIZE;
    uint64_t renumbered = 0;
    for (uint32_t i = 0; i < n; i++) {
        ld_entry(d + pos, &e);
        uint32_t len = ESIZE + e.klen + e.vlen;
        if (!key_matches(d, pos, &e, kh, (const uint8_t *)key, klen) && owned(e.kh, bucket, nbuckets, linear)) {
            memcpy(o + w, d + pos, len);
            w += len;
            if (hits && was_hit(*hits, i) && count < 64)
                renumbered |= 1ull << count;
            count++;
        }
        pos += len;
    }
    if (hits)
        *hits = renumbered;
    finish(o, size, bucket, generation, count, w - HSIZE);
    return why | FC_REMOVED;
}

int64_t fc_bucket_filter(const char *old, uint32_t from, char *out, uint32_t to, uint32_t size,
                         uint64_t generation, double now, uint64_t nbuckets, int linear)
{
    const uint8_t *d = (const uint8_t *)old;
    uint8_t *o = (uint8_t *)out;
    uint32_t n, used, aux;
    if (size < HSIZE)
        return -1;
    int why = check(d, size, from, generation, &n, &used, &aux);
    if (why != FC_OK)
        n = 0;
    uint32_t w = HSIZE, kept = 0, other = 0, nexpired = 0, pos = HSIZE;
    entry e;
    for (uint32_t i = 0; i < n; i++) {
        ld_entry(d + pos, &e);
        uint32_t len = ESIZE + e.klen + e.vlen;
        if (expired(e.expiry, now)) {
            nexpired++;
        } else if (!owned(e.kh, to, nbuckets, linear)) {
            other++;
        } else {
            memcpy(o + w, d + pos, len);
            w += len;
            kept++;
        }
        pos += len;
    }
    finish(o, size, to, generation, kept, w - HSIZE);
    return (int64_t)why | ((int64_t)other << FC_EVICTED_SHIFT) | ((int64_t)nexpired << FC_EXPIRED_SHIFT)
           | ((int64_t)kept << FC_KEPT_SHIFT);
}

typedef struct {
    const uint8_t *at;
    uint32_t len;
    uint32_t rank_num, rank_den;   /* relative age: (2i + 1) / (2n) */
    uint8_t hit, keep;
} merge_entry;

/* Collect the live entries of ``d`` (bucket ``b``, ``n`` entries) owned by ``b`` under
 * ``nbuckets``; counts what is dropped. */
static uint32_t merge_collect(const uint8_t *d, uint32_t n, uint32_t b, uint64_t nbuckets, double now,
                              uint64_t hits, merge_entry *out, uint32_t *other, uint32_t *nexpired)
{
    uint32_t pos = HSIZE, k = 0;
    entry e;
    for (uint32_t i = 0; i < n; i++) {
        ld_entry(d + pos, &e);
        uint32_t len = ESIZE + e.klen + e.vlen;
        if (expired(e.expiry, now)) {
            (*nexpired)++;
        } else if (!owned(e.kh, b, nbuckets, 1)) {
            (*other)++;
        } else {
            out[k].at = d + pos;
            out[k].len = len;
            out[k].rank_num = 2 * i + 1;
            out[k].rank_den = 2 * n;
            out[k].hit = (uint8_t)was_hit(hits, i);
            out[k].keep = 1;
            k++;
        }
        pos += len;
    }
    return k;
}

int64_t fc_bucket_merge(const char *pold, uint32_t parent, const char *cold, uint32_t child, char *out,
                        uint32_t size, uint64_t generation, double now, uint64_t nbuckets,
                        uint64_t phits, uint64_t chits, uint64_t *out_hits, uint32_t *child_why)
{
    const uint8_t *pd = (const uint8_t *)pold, *cd = (const uint8_t *)cold;
    uint8_t *o = (uint8_t *)out;
    uint32_t pn, cn, used, aux;
    *out_hits = 0;
    *child_why = FC_OK;
    if (size < HSIZE || parent == child || child >= nbuckets || parent >= nbuckets)
        return -1;
    int why = check(pd, size, parent, generation, &pn, &used, &aux);
    if (why != FC_OK)
        pn = 0;
    int cwhy = check(cd, size, child, generation, &cn, &used, &aux);
    if (cwhy != FC_OK)
        cn = 0;
    *child_why = (uint32_t)cwhy;
    /* an entry takes at least ESIZE bytes: a valid image holds at most size / ESIZE */
    size_t cap = size / ESIZE + 1;   /* up to 1 MiB buckets: on the heap, not the stack */
    merge_entry *pe = malloc(2 * cap * sizeof *pe), *ce = pe + cap;
    merge_entry **all = malloc(2 * cap * sizeof *all);
    if (!pe || !all) {
        free(pe);
        free(all);
        return -1;
    }
    uint32_t other = 0, nexpired = 0;
    uint32_t np = merge_collect(pd, pn, parent, nbuckets, now, phits, pe, &other, &nexpired);
    uint32_t nc = merge_collect(cd, cn, child, nbuckets, now, chits, ce, &other, &nexpired);
    /* interleave by relative age: the parent's entry first on a tie */
    uint32_t i = 0, j = 0, m = 0;
    uint64_t total = 0;
    while (i < np || j < nc) {
        int take_p = j >= nc || (i < np && (uint64_t)pe[i].rank_num * ce[j].rank_den
                                               <= (uint64_t)ce[j].rank_num * pe[i].rank_den);
        all[m] = take_p ? &pe[i++] : &ce[j++];
        total += all[m++]->len;
    }
    uint64_t room = size - HSIZE;
    uint32_t evicted = 0;
    for (int pass = 0; pass < 2 && total > room; pass++)     /* not hit first, then hit */
        for (uint32_t k = 0; k < m && total > room; k++)
            if (all[k]->keep && all[k]->hit == pass) {
                all[k]->keep = 0;
                total -= all[k]->len;
                evicted++;
            }
    uint32_t w = HSIZE, kept = 0;
    uint64_t h = 0;
    for (uint32_t k = 0; k < m; k++) {
        if (!all[k]->keep)
            continue;
        memcpy(o + w, all[k]->at, all[k]->len);
        w += all[k]->len;
        if (all[k]->hit && kept < 64)
            h |= 1ull << kept;
        kept++;
    }
    free(pe);
    free(all);
    finish(o, size, parent, generation, kept, w - HSIZE);
    *out_hits = h;
    return (int64_t)why | ((int64_t)(other + evicted) << FC_EVICTED_SHIFT)
           | ((int64_t)nexpired << FC_EXPIRED_SHIFT) | ((int64_t)kept << FC_KEPT_SHIFT);
}

/* ------------------------------------------------------------------ bloom filters */

static inline void set_bits(uint8_t *row, uint32_t nbits, uint32_t k, uint64_t kh)
{
    uint32_t p = (uint32_t)(kh & 0xFFFF), h2 = (uint32_t)((kh >> 16) & 0xFFFF) | 1;
    for (uint32_t i = 0; i < k; i++, p += h2) {
        uint32_t q = p % nbits;
        row[q >> 3] |= (uint8_t)(1u << (q & 7));
    }
}

int fc_bloom_may_contain(const fc_bloom *bf, uint64_t bucket, uint64_t kh)
{
    if (bucket >= bf->nbuckets)
        return -1;
    if (bf->nbytes == 0)
        return 1;
    const uint8_t *row = bf->bits + bucket * bf->nbytes;
    uint32_t nbits = bf->nbytes * 8;
    uint32_t p = (uint32_t)(kh & 0xFFFF), h2 = (uint32_t)((kh >> 16) & 0xFFFF) | 1;
    for (uint32_t i = 0; i < bf->k; i++, p += h2) {
        uint32_t q = p % nbits;
        if (!(row[q >> 3] & (1u << (q & 7))))
            return 0;
    }
    return 1;
}

int fc_bloom_is_unknown(const fc_bloom *bf, uint64_t bucket)
{
    if (bucket >= bf->nbuckets)
        return -1;
    const uint8_t *row = bf->bits + bucket * bf->nbytes;
    for (uint32_t i = 0; i < bf->nbytes; i++)
        if (row[i] != 0xFF)
            return 0;
    return 1;
}

/* Build in a private row, then copy (never a cleared filter in between, should a
 * caller ever run these without the GIL). */
int fc_bloom_rebuild(fc_bloom *bf, uint64_t bucket, const uint64_t *kh, size_t n)
{
    uint8_t row[4096];
    if (bucket >= bf->nbuckets || bf->nbytes == 0 || bf->nbytes > sizeof row)
        return -1;
    memset(row, 0, bf->nbytes);
    for (size_t i = 0; i < n; i++)
        set_bits(row, bf->nbytes * 8, bf->k, kh[i]);
    memcpy(bf->bits + bucket * bf->nbytes, row, bf->nbytes);
    return 0;
}

int fc_bloom_rebuild_image(fc_bloom *bf, uint64_t bucket, const char *image, uint32_t size)
{
    const uint8_t *d = (const uint8_t *)image;
    uint8_t row[4096];
    if (bucket >= bf->nbuckets || bf->nbytes == 0 || bf->nbytes > sizeof row)
        return -1;
    memset(row, 0, bf->nbytes);
    if (size >= HSIZE && memcmp(d + FC_BH_MAGIC, MAGIC, 4) == 0) {
        uint32_t n = ld32(d + FC_BH_ITEM_COUNT), used = ld32(d + FC_BH_USED_BYTES);
        uint64_t pos = HSIZE, end = HSIZE + (uint64_t)used;
        if (end > size)
            n = 0, memset(row, 0xFF, bf->nbytes);
        for (uint32_t i = 0; i < n; i++) {
            if (pos + ESIZE > end) {
                memset(row, 0xFF, bf->nbytes);
                break;
            }
            set_bits(row, bf->nbytes * 8, bf->k, ld64(d + pos + FC_BE_KEY_HASH));
            pos += ESIZE + ld16(d + pos + FC_BE_KEY_LEN) + (uint64_t)ld32(d + pos + FC_BE_VALUE_LEN);
        }
    } else if (!(size >= HSIZE && all_zero(d, size))) {
        memset(row, 0xFF, bf->nbytes);
    }
    memcpy(bf->bits + bucket * bf->nbytes, row, bf->nbytes);
    return 0;
}

static void learn_image(fc_bloom *bf, uint32_t bucket, const uint8_t *d, uint32_t size, int valid)
{
    if (bf->nbytes == 0 || fc_bloom_is_unknown(bf, bucket) != 1)
        return;
    if (valid)
        fc_bloom_rebuild_image(bf, bucket, (const char *)d, size);
    else
        fc_bloom_rebuild(bf, bucket, NULL, 0);
}
