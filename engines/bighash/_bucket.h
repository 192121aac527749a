/* BigHash's per-bucket hot work in C: parse/validate a bucket image, find a key, build the
 * image for an insert or a remove, and the per-bucket bloom filters. Python (bighash.py,
 * bloom.py) owns every buffer, the geometry, counters and log messages; these functions
 * only read and write the memory they are handed, and keep no state.
 * The on-flash layout is the one in bighash.py's docstring (little-endian); the FC_BH_* and
 * FC_BE_* offsets below are its one C definition (bighash.py checks them on import).
 * This header is also fed to cffi's cdef, so it holds no preprocessor lines. */

/* The bucket header and the entry header: each field's offset, then the header's size. */
enum {
    FC_BH_MAGIC = 0, FC_BH_VERSION = 4, FC_BH_HEADER_SIZE = 6, FC_BH_CHECKSUM = 8, FC_BH_GENERATION = 16,
    FC_BH_ITEM_COUNT = 24, FC_BH_USED_BYTES = 28, FC_BH_SIZE = 32,
    FC_BE_KEY_HASH = 0, FC_BE_VALUE_SUM = 8, FC_BE_EXPIRY = 12, FC_BE_VALUE_LEN = 16, FC_BE_KEY_LEN = 20,
    FC_BE_SIZE = 22,
    FC_BH_FORMAT_VERSION = 1
};

/* The seeds and the bucket magic (bighash.py checks them against its own on import). */
extern const uint64_t fc_key_seed;
extern const uint64_t fc_checksum_seed;
extern const char fc_bucket_magic[4];

/* Per-bucket bloom filters over a caller-owned array of nbuckets * nbytes bytes.
 * Positions by double hashing from the low 32 bits of the key hash (see bloom.py). */
typedef struct fc_bloom {
    uint8_t *bits;
    uint64_t nbuckets;
    uint32_t nbytes;        /* 1..4096 */
    uint32_t k;             /* 1..32 */
} fc_bloom;

/* Why a bucket image reads as empty: FC_OK (valid, possibly never written) or one of these.
 * FC_STALE is not a failure (another generation); the others are corruption. */
enum {
    FC_OK = 0,
    FC_STALE = 1,
    FC_BAD_MAGIC = 2,       /* not "FCBH" and not all zeros */
    FC_BAD_VERSION = 3,     /* format version or header size */
    FC_BAD_USED = 4,        /* used_bytes > size - 32 */
    FC_BAD_CHECKSUM = 5,
    FC_OVERRUN = 6,         /* an entry runs past used_bytes */
    FC_BAD_END = 7          /* item_count entries end before used_bytes (*aux = where) */
};

/* fc_bucket_lookup's answer when > 0, for the last entry of the key: the value's offset in
 * the image (bits 0-19), its length (bits 20-39), the key length (bits 40-55), FC_FOUND,
 * FC_SUM_OK if the value matches its value_sum, FC_HAS_EXPIRY if its expiry is not 0
 * (it sits at value offset - key length - FC_BE_SIZE + FC_BE_EXPIRY). 0: no entry of the key (or an empty
 * bucket). < 0: minus an FC_* reason (the image reads as empty). */
enum { FC_LEN_MASK = 0xFFFFF, FC_VLEN_SHIFT = 20, FC_KLEN_SHIFT = 40 };
static const int64_t FC_FOUND = 0x100000000000000;
static const int64_t FC_SUM_OK = 0x200000000000000;
static const int64_t FC_HAS_EXPIRY = 0x400000000000000;

/* fc_bucket_insert / fc_bucket_remove answer a packed int64:
 *   bits 0-2 an FC_* reason for the old image (treated as empty unless FC_OK),
 *   bit 3 FC_REPLACED (insert: an entry of the key was dropped) or FC_REMOVED (remove: a
 *   live entry was dropped and *out holds the new image; otherwise *out is untouched),
 *   bits 4-23 evicted entries, bits 24-43 expired entries dropped (insert only).
 *   -1: bad arguments (the item does not fit, or size is not a bucket size). */
enum { FC_REASON_MASK = 7, FC_REPLACED = 8, FC_REMOVED = 8, FC_EVICTED_SHIFT = 4, FC_EXPIRED_SHIFT = 24,
       FC_COUNT_MASK = 0xFFFFF };

/* The reason ``data`` (``size`` bytes, bucket ``bucket``) reads as empty, or FC_OK.
 * *aux gets the entries' end (relative to the header) for FC_BAD_END. */
int fc_bucket_check(const char *data, uint32_t size, uint32_t bucket, uint64_t generation, uint32_t *aux);

/* The bucket a key hash maps to among ``nbuckets`` (the one definition: bighash.py calls
 * it). ``linear`` 0: the range mapping, (high 32 bits * nbuckets) >> 32, for a BigHash whose
 * bucket count never changes. ``linear`` 1: linear hashing on the high 32 bits, for one
 * that grows: M = the largest power of two <= nbuckets, b = h & (2M - 1), and b - M when
 * b >= nbuckets; growing from n to n + 1 buckets moves keys only from bucket n - M (to
 * bucket n). */
uint64_t fc_bucket_of(uint64_t key_hash, uint64_t nbuckets, int linear);

/* Every image built below (insert, remove, filter) keeps only the entries that map to
 * ``bucket`` under (``nbuckets``, ``linear``): a copy left in another bucket by a split a
 * crash interrupted is dropped (counted as evicted), never served or carried on. */

/* Hit bits (DRAM, one uint64_t per bucket, owned by the caller): bit i set = entry i of the
 * bucket as it is on flash (oldest first) was found by a lookup since the bucket was last
 * written; entries past the 64th have none. An insert gives hit entries a second chance
 * (see fc_bucket_insert); whoever writes the bucket then zeroes its word. A wrong word is
 * harmless: it only changes which entries an insert evicts first. */

/* ``learn``: NULL, or the filters to warm: if the bucket's filter is unknown (all bits set)
 * it becomes exactly the image's keys (none if the image reads as empty). ``hits``: NULL,
 * or the bucket's hit bits, where a found entry's bit is set. */
int64_t fc_bucket_lookup(const char *data, uint32_t size, uint32_t bucket, uint64_t generation,
                         uint64_t key_hash, const char *key, uint32_t key_len, fc_bloom *learn,
                         uint64_t *hits);

/* ``out`` (``size`` bytes, not overlapping ``old``) gets the whole new image: the old live
 * entries minus any of the key, minus expired ones (expiry != 0 and <= now), minus the
 * oldest until the new entry fits, then the new entry; zeros after it; header + checksum.
 * ``hits``: the old image's hit bits (0: none). Entries not hit go first, oldest first, and
 * those hit only when no unhit one is left; hit survivors move after the unhit ones, just
 * before the new entry (a second chance, as CLOCK gives, for no extra write). */
int64_t fc_bucket_insert(const char *old, char *out, uint32_t size, uint32_t bucket, uint64_t generation,
                         double now, uint64_t key_hash, const char *key, uint32_t key_len,
                         const char *value, uint32_t value_len, uint32_t expiry, uint64_t hits,
                         uint64_t nbuckets, int linear);

/* ``hits``: NULL, or the bucket's hit bits, renumbered for the new image when an entry is
 * removed (the caller writes that image). */
int64_t fc_bucket_remove(const char *old, char *out, uint32_t size, uint32_t bucket, uint64_t generation,
                         double now, uint64_t key_hash, const char *key, uint32_t key_len, fc_bloom *learn,
                         uint64_t *hits, uint64_t nbuckets, int linear);

/* A split's image: ``out`` (bucket ``to``) gets the live entries of ``old`` (bucket
 * ``from``, validated as that bucket) that map to ``to`` under (``nbuckets``, ``linear``),
 * in their order; expired ones are dropped. Packed as fc_bucket_insert's answer: the
 * reason for the old image, bits 4-23 the entries not kept that were live (they belong to
 * another bucket), bits 24-43 the expired ones dropped; bits 44-63 the entries kept. */
int64_t fc_bucket_filter(const char *old, uint32_t from, char *out, uint32_t to, uint32_t size,
                         uint64_t generation, double now, uint64_t nbuckets, int linear);
enum { FC_KEPT_SHIFT = 44 };

/* A merge's image (the inverse of a split): ``out`` (bucket ``parent``) gets the live
 * entries of ``pold`` (bucket ``parent``) that map to ``parent`` and those of ``cold``
 * (bucket ``child``) that map to ``child``, both under (``nbuckets``, linear hashing): the
 * count before the merge, so a copy an interrupted split or merge left in the wrong bucket
 * is dropped. Both are kept in their age order, interleaved by relative position (the two
 * images' oldest entries first). When the union does not fit, entries not hit go first,
 * oldest first, then hit ones, as an insert evicts. ``phits``/``chits``: the two images'
 * hit bits; *out_hits gets the kept hit entries' bits renumbered for ``out``; *child_why
 * the reason ``cold`` read as empty (FC_OK). Packed as fc_bucket_filter's answer (for the
 * parent's image): bits 4-23 the live entries not kept (another bucket's, or evicted to
 * fit), 24-43 the expired ones dropped, 44-63 the entries kept. -1: bad arguments. */
int64_t fc_bucket_merge(const char *pold, uint32_t parent, const char *cold, uint32_t child, char *out,
                        uint32_t size, uint64_t generation, double now, uint64_t nbuckets,
                        uint64_t phits, uint64_t chits, uint64_t *out_hits, uint32_t *child_why);

/* xxh3_64 with a seed (what python-xxhash's xxh3_64_intdigest(data, seed) returns; _xxh3.h). */
uint64_t fc_xxh3_64(const char *data, size_t len, uint64_t seed);

/* The bloom filter functions below. */

/* 1 maybe, 0 surely not, -1 bucket out of range. */
int fc_bloom_may_contain(const fc_bloom *bf, uint64_t bucket, uint64_t key_hash);
/* 1 if every bit is set (unknown), 0 if not, -1 bucket out of range. */
int fc_bloom_is_unknown(const fc_bloom *bf, uint64_t bucket);
/* Replace the bucket's filter by one holding exactly these hashes. 0, or -1 out of range. */
int fc_bloom_rebuild(fc_bloom *bf, uint64_t bucket, const uint64_t *key_hashes, size_t n);
/* The same from the key hashes of a bucket image this code built or validated: all zeros
 * gives an empty filter; an image that is not "FCBH" or whose entries do not fit its
 * used_bytes (never the case for those) gives an unknown one (all bits set). */
int fc_bloom_rebuild_image(fc_bloom *bf, uint64_t bucket, const char *image, uint32_t size);
