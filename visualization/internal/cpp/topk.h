/*
 * topk.h: the C ABI of the C++17 Top-K engine (topk.cc).
 *
 * Per metric the engine keeps every host's latest value in two ordered
 * sets (by value, by timestamp) plus a host index, so an update costs
 * O(log N) for N hosts of the metric and the top K is exact; hosts expire
 * TTL after their sample's timestamp. The current top K of every metric is
 * exported to a POSIX shared-memory segment under a seqlock; the layout is
 * the TOPK_SHM_* constants below and docs/analysis.md.
 *
 * Not thread-safe: the caller serialises every call on one engine (the Go
 * wrapper holds a mutex). Strings are (pointer, length) pairs that are
 * copied; the engine never keeps a caller's pointer past a call.
 */
#ifndef MON_TOPK_H
#define MON_TOPK_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Shared-memory layout, version 1 (host byte order; every field 8-byte
 * aligned so a reader can copy it with 64-bit atomic loads). */
#define TOPK_SHM_MAGIC 0x314B504F544E4F4DULL /* "MONTOPK1" little-endian */
#define TOPK_SHM_VERSION 1u
#define TOPK_SHM_HEADER_SIZE 64u
#define TOPK_SHM_NAME_WIDTH 128u  /* metric name, NUL-padded */
#define TOPK_SHM_HOST_WIDTH 128u  /* host id, NUL-padded */
#define TOPK_SHM_SLOT_HEAD 136u   /* name + uint32 count + uint32 reserved */
#define TOPK_SHM_ENTRY_SIZE 144u  /* host + double value + int64 ts */

/* Limits on input: longer names are refused by update. */
#define TOPK_MAX_HOST_LEN 128u
#define TOPK_MAX_METRIC_LEN 1024u

/* update results (negative: refused, nothing changed). */
#define TOPK_ERR_INVALID (-1)      /* NaN/Inf value, empty or too long name */
#define TOPK_ERR_STALE (-2)        /* older than the host's stored sample, or already expired */
#define TOPK_ERR_METRICS_FULL (-3) /* a new metric beyond max_metrics */

typedef struct mon_topk mon_topk;

/* One ranked entry returned by mon_topk_top; the host id is
 * hosts[host_off : host_off+host_len] of the caller's buffer. */
typedef struct {
  double value;
  int64_t ts;
  uint32_t host_off;
  uint32_t host_len;
} mon_topk_entry;

/* mon_topk_new returns an engine keeping k entries per metric in the
 * export, expiring entries ttl_ns after their timestamp, with at most
 * max_metrics metrics. shm_name ("" or NULL: no export) is a POSIX shm
 * name ("/monitor-topk"); the segment is created (or reset), sized and
 * unlinked by mon_topk_free. On failure it returns NULL and writes a
 * message to err. */
mon_topk *mon_topk_new(uint32_t k, int64_t ttl_ns, uint32_t max_metrics,
                       const char *shm_name, char *err, size_t errlen);

/* mon_topk_free releases the engine, unmaps and unlinks its segment. */
void mon_topk_free(mon_topk *t);

/* mon_topk_update sets host's latest value of metric (ts in Unix seconds;
 * now_ns the current time in Unix nanoseconds). It returns a negative
 * TOPK_ERR_*, or (metric_id << 1) | changed, where metric_id is the
 * metric's dense id (0, 1, ... in order of first appearance) and changed
 * says whether the metric's top K changed. The export is written by
 * mon_topk_publish. */
int64_t mon_topk_update(mon_topk *t, const char *metric, size_t metric_len,
                        const char *host, size_t host_len, double value,
                        int64_t ts, int64_t now_ns);

/* mon_topk_expire drops every entry expired at now_ns and writes the ids
 * of metrics whose top K changed to changed[0..cap); it returns how many
 * changed (possibly more than cap; the rest are not written). */
size_t mon_topk_expire(mon_topk *t, int64_t now_ns, uint32_t *changed,
                       size_t cap);

/* mon_topk_publish writes the top K of every metric changed since the last
 * publish to the shared segment inside one seqlock write section. */
void mon_topk_publish(mon_topk *t, int64_t now_ns);

/* mon_topk_top writes the best min(k, hosts) entries of metric id, best
 * first, to out, and their host ids to hosts (hosts_cap bytes; at least
 * k * TOPK_MAX_HOST_LEN). It returns the number of entries. */
size_t mon_topk_top(mon_topk *t, uint32_t metric_id, uint32_t k,
                    mon_topk_entry *out, char *hosts, size_t hosts_cap);

/* mon_topk_len returns how many hosts metric id holds. */
size_t mon_topk_len(mon_topk *t, uint32_t metric_id);

#ifdef __cplusplus
}
#endif

#endif
