/* The emulated SSD's FTL core: page-mapped L2P/P2L, reclaim units, write frontiers, GC.
 * Only the state and its hot loops live here; Python (ftl.py) allocates every array
 * (numpy), owns geometry, persistence and reporting. Errors are negative errno values.
 * This header is also fed to cffi's cdef, so it holds no preprocessor lines. */

typedef struct fc_ftl {
    /* geometry (set by Python before fc_ftl_reset) */
    uint32_t ru_pages;      /* pages per reclaim unit (Np) */
    uint32_t nrg;           /* reclaim groups */
    uint32_t nruh;          /* reclaim unit handles */
    uint32_t ru_per_rg;     /* reclaim units per reclaim group */
    uint32_t nru;           /* nrg * ru_per_rg */
    uint64_t exported_pages;/* logical pages the host sees (U) */
    uint32_t gc_low;        /* GC keeps more than this many free RUs per RG */
    uint32_t policy;        /* 0 greedy, 1 fifo, 2 cost-benefit */
    uint32_t debug;         /* check invariants after every GC */
    uint32_t reloc_cap;     /* relocation records kept (0: none) */

    /* arrays, all allocated by the caller */
    uint32_t *l2p;          /* exported_pages: physical page, or 0xFFFFFFFF */
    uint32_t *p2l;          /* nru * ru_pages: logical page, or 0xFFFFFFFF */
    uint16_t *p_ruh;        /* nru * ru_pages: handle that first wrote the page */
    uint32_t *ru_valid;     /* nru */
    uint32_t *ru_wp;        /* nru: pages programmed since erase */
    uint8_t  *ru_state;     /* nru: 0 free, 1 open host, 2 open gc, 3 closed */
    uint16_t *ru_owner;     /* nru: handle for host RUs, handle or 0xFFFF (shared) for gc RUs */
    uint8_t  *ruh_pi;       /* nruh: 1 when the handle is persistently isolated */
    uint64_t *ru_stamp;     /* nru: host page clock when closed */
    uint64_t *ru_seq;       /* nru: close order (1, 2, ...): greedy takes the oldest of equals */
    int32_t  *ru_next;      /* nru: bucket / free list links */
    int32_t  *ru_prev;      /* nru */
    int32_t  *bucket_head;  /* nrg * (ru_pages + 1): closed RUs by valid count */
    uint32_t *min_bucket;   /* nrg: no closed RU has fewer valid pages than this */
    int32_t  *free_head;    /* nrg */
    uint32_t *free_count;   /* nrg */
    int32_t  *host_open;    /* nrg * nruh: open host RU, or -1 */
    int32_t  *gc_open;      /* nrg * (nruh + 1): PI handles' own gc RU, and [nruh] shared */
    int32_t  *fifo;         /* nru: per RG a ring of closed RUs in close order */
    uint32_t *fifo_head;    /* nrg */
    uint32_t *fifo_len;     /* nrg */
    uint64_t *ruh_host;     /* nruh: host pages written through the handle */
    uint64_t *ruh_media;    /* nruh: media pages of the handle's data (host + gc copies) */
    uint64_t *reloc;        /* reloc_cap: lpns relocated by GC, a ring */

    /* counters */
    uint64_t host_pages;    /* HBMW in pages */
    uint64_t gc_pages;      /* GC copies: MBMW = host + gc */
    uint64_t erases;        /* MBE in RUs */
    uint64_t mapped;        /* mapped logical pages */
    uint64_t clock;         /* host pages ever written (for ages) */
    uint64_t closes;        /* RUs ever closed (the last ru_seq) */
    uint64_t reloc_n;       /* relocations recorded in total */
    uint64_t gc_runs;       /* victims reclaimed */
    int32_t  check_error;   /* first invariant broken in debug mode (0: none) */
} fc_ftl;

void fc_ftl_reset(fc_ftl *f);
int fc_ftl_write(fc_ftl *f, uint64_t lpn, uint64_t npages, uint32_t rg, uint32_t ruh);
int fc_ftl_write_pages(fc_ftl *f, const uint32_t *lpns, size_t n, uint32_t rg, uint32_t ruh);
int fc_ftl_trim(fc_ftl *f, uint64_t lpn, uint64_t npages);
int64_t fc_ftl_ruh_update(fc_ftl *f, uint32_t rg, uint32_t ruh);
int64_t fc_ftl_ru_remaining(fc_ftl *f, uint32_t rg, uint32_t ruh);
int fc_ftl_check(fc_ftl *f);
