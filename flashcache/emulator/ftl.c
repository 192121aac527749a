/* The emulated SSD's FTL core (see ftl.h). Every operation is O(1) amortised per page
 * for greedy and FIFO: closed RUs sit in per-RG doubly linked lists bucketed by valid
 * count, so a victim is the first non-empty bucket from a lower bound that only moves
 * down when a page is invalidated; greedy then scans that one bucket for the oldest RU
 * (at most the RG's RUs, once per victim, that is once per RU of pages written).
 * Cost-benefit scans the RG's RUs once per victim. */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include "ftl.h"

#define NONE 0xFFFFFFFFu
#define SHARED 0xFFFFu
enum { RU_FREE = 0, RU_OPEN_HOST = 1, RU_OPEN_GC = 2, RU_CLOSED = 3 };
enum { POL_GREEDY = 0, POL_FIFO = 1, POL_COST_BENEFIT = 2 };

static inline uint32_t rg_of(const fc_ftl *f, uint32_t ru) { return ru / f->ru_per_rg; }
static inline int32_t *bucket(fc_ftl *f, uint32_t rg, uint32_t v)
{
    return &f->bucket_head[(size_t)rg * (f->ru_pages + 1) + v];
}

static void bucket_insert(fc_ftl *f, uint32_t ru)
{
    uint32_t rg = rg_of(f, ru), v = f->ru_valid[ru];
    int32_t *h = bucket(f, rg, v);
    f->ru_prev[ru] = -1;
    f->ru_next[ru] = *h;
    if (*h >= 0)
        f->ru_prev[*h] = (int32_t)ru;
    *h = (int32_t)ru;
    if (v < f->min_bucket[rg])
        f->min_bucket[rg] = v;
}

static void bucket_remove(fc_ftl *f, uint32_t ru)
{
    int32_t p = f->ru_prev[ru], n = f->ru_next[ru];
    if (p >= 0)
        f->ru_next[p] = n;
    else
        *bucket(f, rg_of(f, ru), f->ru_valid[ru]) = n;
    if (n >= 0)
        f->ru_prev[n] = p;
    f->ru_next[ru] = f->ru_prev[ru] = -1;
}

static void push_free(fc_ftl *f, uint32_t ru)
{
    uint32_t rg = rg_of(f, ru);
    f->ru_state[ru] = RU_FREE;
    f->ru_valid[ru] = 0;
    f->ru_wp[ru] = 0;
    f->ru_next[ru] = f->free_head[rg];
    f->ru_prev[ru] = -1;
    f->free_head[rg] = (int32_t)ru;
    f->free_count[rg]++;
}

static int32_t pop_free(fc_ftl *f, uint32_t rg)
{
    int32_t ru = f->free_head[rg];
    if (ru < 0)
        return -ENOSPC;
    f->free_head[rg] = f->ru_next[ru];
    f->ru_next[ru] = -1;
    f->free_count[rg]--;
    return ru;
}

void fc_ftl_reset(fc_ftl *f)
{
    size_t pages = (size_t)f->nru * f->ru_pages;
    for (uint64_t i = 0; i < f->exported_pages; i++)
        f->l2p[i] = NONE;
    for (size_t i = 0; i < pages; i++) {
        f->p2l[i] = NONE;
        f->p_ruh[i] = 0;
    }
    for (size_t i = 0; i < (size_t)f->nrg * (f->ru_pages + 1); i++)
        f->bucket_head[i] = -1;
    for (uint32_t rg = 0; rg < f->nrg; rg++) {
        f->free_head[rg] = -1;
        f->free_count[rg] = 0;
        f->min_bucket[rg] = f->ru_pages + 1;
        f->fifo_head[rg] = f->fifo_len[rg] = 0;
    }
    for (size_t i = 0; i < (size_t)f->nrg * f->nruh; i++)
        f->host_open[i] = -1;
    for (size_t i = 0; i < (size_t)f->nrg * (f->nruh + 1); i++)
        f->gc_open[i] = -1;
    for (uint32_t h = 0; h < f->nruh; h++)
        f->ruh_host[h] = f->ruh_media[h] = 0;
    /* push in reverse so RU 0 of each RG is used first */
    for (uint32_t ru = f->nru; ru-- > 0;) {
        f->ru_owner[ru] = 0;
        f->ru_stamp[ru] = 0;
        f->ru_seq[ru] = 0;
        push_free(f, ru);
    }
    f->host_pages = f->gc_pages = f->erases = f->mapped = f->clock = f->closes = 0;
    f->reloc_n = f->gc_runs = 0;
    f->check_error = 0;
}

static void close_ru(fc_ftl *f, uint32_t ru)
{
    f->ru_state[ru] = RU_CLOSED;
    f->ru_stamp[ru] = f->clock;
    f->ru_seq[ru] = ++f->closes;
    if (f->policy == POL_FIFO) {
        uint32_t rg = rg_of(f, ru);
        uint32_t slot = (f->fifo_head[rg] + f->fifo_len[rg]) % f->ru_per_rg;
        f->fifo[(size_t)rg * f->ru_per_rg + slot] = (int32_t)ru;
        f->fifo_len[rg]++;
    } else {
        bucket_insert(f, ru);
    }
}

static void invalidate(fc_ftl *f, uint32_t ppn)
{
    uint32_t ru = ppn / f->ru_pages;
    f->p2l[ppn] = NONE;
    if (f->ru_state[ru] == RU_CLOSED && f->policy != POL_FIFO) {
        bucket_remove(f, ru);
        f->ru_valid[ru]--;
        bucket_insert(f, ru);
    } else {
        f->ru_valid[ru]--;
    }
}

static int32_t pick_victim(fc_ftl *f, uint32_t rg)
{
    if (f->policy == POL_FIFO) {
        if (!f->fifo_len[rg])
            return -ENOSPC;
        int32_t ru = f->fifo[(size_t)rg * f->ru_per_rg + f->fifo_head[rg]];
        f->fifo_head[rg] = (f->fifo_head[rg] + 1) % f->ru_per_rg;
        f->fifo_len[rg]--;
        return ru;
    }
    if (f->policy == POL_COST_BENEFIT) {
        /* Rosenblum & Ousterhout: maximise age * (1 - u) / (2u); an empty RU wins outright */
        int32_t best = -1;
        double best_score = -1.0;
        uint32_t first = rg * f->ru_per_rg;
        for (uint32_t ru = first; ru < first + f->ru_per_rg; ru++) {
            if (f->ru_state[ru] != RU_CLOSED)
                continue;
            double u = (double)f->ru_valid[ru] / f->ru_pages;
            if (f->ru_valid[ru] == 0) {
                best = (int32_t)ru;
                break;
            }
            double score = (double)(f->clock - f->ru_stamp[ru] + 1) * (1.0 - u) / (2.0 * u);
            if (score > best_score) {
                best_score = score;
                best = (int32_t)ru;
            }
        }
        if (best >= 0)
            bucket_remove(f, (uint32_t)best);
        return best >= 0 ? best : -ENOSPC;
    }
    for (uint32_t v = f->min_bucket[rg]; v <= f->ru_pages; v++) {
        int32_t ru = *bucket(f, rg, v);
        if (ru >= 0) {
            /* Among RUs with equally few valid pages take the oldest: the one closed first
             * (ru_seq; the host clock in ru_stamp can tie, GC closes RUs between host
             * pages). A bucket is in the order RUs reached
             * its count, newest first, which is not their age: taking its head, as this
             * once did, favours RUs whose data just died and, on a mixed stream, reads a
             * few per cent above an age-ordered greedy FTL. */
            int32_t best = ru;
            for (int32_t r = f->ru_next[ru]; r >= 0; r = f->ru_next[r])
                if (f->ru_seq[r] < f->ru_seq[best])
                    best = r;
            f->min_bucket[rg] = v;
            bucket_remove(f, (uint32_t)best);
            return best;
        }
    }
    f->min_bucket[rg] = f->ru_pages + 1;
    return -ENOSPC;
}

/* Relocate the victim's valid pages to its GC frontier and erase it. */
static int gc_one(fc_ftl *f, uint32_t rg)
{
    int32_t victim = pick_victim(f, rg);
    if (victim < 0)
        return victim;
    uint32_t v = (uint32_t)victim;
    if (f->ru_valid[v] >= f->ru_pages && f->policy != POL_FIFO) {
        /* the emptiest RU is full: every page is live, the device has no spare left */
        close_ru(f, v);
        return -ENOSPC;
    }   /* FIFO copies a full RU as it comes (no gain; alloc_host_ru bounds the stalls) */
    uint32_t owner = f->ru_owner[v];
    uint32_t slot = (owner != SHARED && f->ruh_pi[owner]) ? owner : f->nruh;
    int32_t *dst = &f->gc_open[(size_t)rg * (f->nruh + 1) + slot];
    size_t base = (size_t)v * f->ru_pages;
    for (uint32_t i = 0; i < f->ru_wp[v] && f->ru_valid[v]; i++) {
        uint32_t lpn = f->p2l[base + i];
        if (lpn == NONE)
            continue;
        if (*dst < 0) {
            int32_t ru = pop_free(f, rg);
            if (ru < 0)
                return ru;
            f->ru_state[ru] = RU_OPEN_GC;
            f->ru_owner[ru] = slot == f->nruh ? SHARED : (uint16_t)slot;
            *dst = ru;
        }
        uint32_t d = (uint32_t)*dst;
        uint32_t ppn = d * f->ru_pages + f->ru_wp[d]++;
        uint16_t h = f->p_ruh[base + i];
        f->p2l[ppn] = lpn;
        f->p_ruh[ppn] = h;
        f->l2p[lpn] = ppn;
        f->ru_valid[d]++;
        f->p2l[base + i] = NONE;
        f->ru_valid[v]--;
        f->gc_pages++;
        f->ruh_media[h]++;
        if (f->reloc_cap)
            f->reloc[f->reloc_n++ % f->reloc_cap] = lpn;
        if (f->ru_wp[d] == f->ru_pages) {
            close_ru(f, d);
            *dst = -1;
        }
    }
    f->erases++;
    f->gc_runs++;
    push_free(f, v);
    if (f->debug && !f->check_error)
        f->check_error = fc_ftl_check(f);
    return 0;
}

static int32_t alloc_host_ru(fc_ftl *f, uint32_t rg)
{
    uint32_t stalls = 0;
    while (f->free_count[rg] <= f->gc_low) {
        uint32_t before = f->free_count[rg];
        int r = gc_one(f, rg);
        if (r < 0)
            return r;
        if (f->free_count[rg] > before)
            stalls = 0;
        else if (++stalls > f->ru_per_rg)
            return -ENOSPC;     /* a whole lap of victims and not one RU gained */
    }
    return pop_free(f, rg);
}

static inline int write_page(fc_ftl *f, uint32_t lpn, uint32_t rg, uint32_t ruh)
{
    int32_t *open = &f->host_open[(size_t)rg * f->nruh + ruh];
    if (*open < 0) {
        int32_t ru = alloc_host_ru(f, rg);
        if (ru < 0)
            return ru;
        f->ru_state[ru] = RU_OPEN_HOST;
        f->ru_owner[ru] = (uint16_t)ruh;
        *open = ru;
    }
    uint32_t old = f->l2p[lpn];
    if (old != NONE)
        invalidate(f, old);
    else
        f->mapped++;
    uint32_t ru = (uint32_t)*open;
    uint32_t ppn = ru * f->ru_pages + f->ru_wp[ru]++;
    f->p2l[ppn] = lpn;
    f->p_ruh[ppn] = (uint16_t)ruh;
    f->l2p[lpn] = ppn;
    f->ru_valid[ru]++;
    f->host_pages++;
    f->clock++;
    f->ruh_host[ruh]++;
    f->ruh_media[ruh]++;
    if (f->ru_wp[ru] == f->ru_pages) {
        close_ru(f, ru);
        *open = -1;
    }
    return 0;
}

static int check_args(const fc_ftl *f, uint32_t rg, uint32_t ruh)
{
    return (rg >= f->nrg || ruh >= f->nruh) ? -EINVAL : 0;
}

int fc_ftl_write(fc_ftl *f, uint64_t lpn, uint64_t npages, uint32_t rg, uint32_t ruh)
{
    int r = check_args(f, rg, ruh);
    if (r)
        return r;
    if (lpn > f->exported_pages || npages > f->exported_pages - lpn)
        return -ERANGE;
    for (uint64_t i = 0; i < npages; i++)
        if ((r = write_page(f, (uint32_t)(lpn + i), rg, ruh)) < 0)
            return r;
    return f->check_error ? -EIO : 0;   /* a C caller (results.c's Reader) learns of it here */
}

int fc_ftl_write_pages(fc_ftl *f, const uint32_t *lpns, size_t n, uint32_t rg, uint32_t ruh)
{
    int r = check_args(f, rg, ruh);
    if (r)
        return r;
    for (size_t i = 0; i < n; i++)
        if (lpns[i] >= f->exported_pages)
            return -ERANGE;
    for (size_t i = 0; i < n; i++)
        if ((r = write_page(f, lpns[i], rg, ruh)) < 0)
            return r;
    return 0;
}

int fc_ftl_trim(fc_ftl *f, uint64_t lpn, uint64_t npages)
{
    if (lpn > f->exported_pages || npages > f->exported_pages - lpn)
        return -ERANGE;
    for (uint64_t i = lpn; i < lpn + npages; i++) {
        uint32_t old = f->l2p[i];
        if (old == NONE)
            continue;
        invalidate(f, old);
        f->l2p[i] = NONE;
        f->mapped--;
    }
    return 0;
}

int64_t fc_ftl_ruh_update(fc_ftl *f, uint32_t rg, uint32_t ruh)
{
    int r = check_args(f, rg, ruh);
    if (r)
        return r;
    int32_t *open = &f->host_open[(size_t)rg * f->nruh + ruh];
    if (*open < 0 || f->ru_wp[*open] == 0)
        return 0;   /* nothing written yet: the handle already points at a fresh RU */
    uint32_t ru = (uint32_t)*open;
    int64_t left = (int64_t)(f->ru_pages - f->ru_wp[ru]);
    close_ru(f, ru);
    *open = -1;
    return left;
}

int64_t fc_ftl_ru_remaining(fc_ftl *f, uint32_t rg, uint32_t ruh)
{
    int r = check_args(f, rg, ruh);
    if (r)
        return r;
    int32_t ru = f->host_open[(size_t)rg * f->nruh + ruh];
    return ru < 0 ? (int64_t)f->ru_pages : (int64_t)(f->ru_pages - f->ru_wp[ru]);
}

/* Invariants; returns 0 or the number of the first one broken (negated). */
int fc_ftl_check(fc_ftl *f)
{
    uint64_t valid_sum = 0, mapped = 0, media = 0;
    size_t pages = (size_t)f->nru * f->ru_pages;
    for (uint32_t ru = 0; ru < f->nru; ru++) {
        uint32_t n = 0;
        for (uint32_t i = 0; i < f->ru_pages; i++) {
            uint32_t lpn = f->p2l[(size_t)ru * f->ru_pages + i];
            if (lpn == NONE)
                continue;
            if (i >= f->ru_wp[ru] || lpn >= f->exported_pages)
                return -2;                              /* page beyond the write pointer */
            n++;
        }
        if (n != f->ru_valid[ru])
            return -3;                                  /* RU valid count is wrong */
        valid_sum += n;
    }
    for (uint64_t lpn = 0; lpn < f->exported_pages; lpn++) {
        uint32_t ppn = f->l2p[lpn];
        if (ppn == NONE)
            continue;
        if (ppn >= pages || f->p2l[ppn] != lpn)
            return -4;                                  /* L2P and P2L disagree: mapped twice or lost */
        mapped++;
    }
    if (mapped != f->mapped || valid_sum != mapped)
        return -1;                                      /* sum of valid counts != mapped LBAs */
    for (uint32_t h = 0; h < f->nruh; h++)
        media += f->ruh_media[h];
    if (media != f->host_pages + f->gc_pages)
        return -5;                                      /* MBMW != HBMW + copies */
    for (uint32_t rg = 0; rg < f->nrg; rg++) {
        uint32_t n = 0;
        for (int32_t ru = f->free_head[rg]; ru >= 0; ru = f->ru_next[ru]) {
            if (f->ru_state[ru] != RU_FREE || n > f->ru_per_rg)
                return -6;                              /* free list corrupt */
            n++;
        }
        if (n != f->free_count[rg])
            return -6;                                  /* free count wrong (or negative) */
    }
    return 0;
}
