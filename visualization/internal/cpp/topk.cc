// topk.cc: the C++17 Top-K engine behind topk.h.
//
// Per metric: an index host -> Entry (the host's latest value and
// timestamp), a std::set of entries ordered by value (best first) and a
// std::set ordered by timestamp (oldest first, for expiry). An update is a
// hash lookup and a move of the entry's node in each set: O(log N) for N
// hosts of the metric, no matter how K compares to N, and the top K is
// exact: a host that fell out of the top K and later rises re-enters at its
// right rank, because every host's latest value is kept, not just K of them.
//
// The sets are what an update costs (a profile at 10k hosts showed their
// pointer chasing and string compares as most of the time), so: each entry
// keeps its iterators into both sets and a move is extract + re-insert of
// the same node (no search to erase, no allocation); the set keys carry the
// value or timestamp, so a comparison reads the neighbour's node, not its
// Entry, except on ties; the time set breaks ties by the Entry's address,
// not its host (the order of equal timestamps does not matter to expiry),
// and an update that keeps its timestamp or value leaves that set alone.
//
// Change detection is O(1) when the top K does not move: each metric keeps
// a copy of its exported top K (cache) and each entry a flag saying
// whether it is in it. An update touches the top K only if the host was in
// it or its new value ranks above the cache's last entry; then the cache
// is rebuilt from the set (O(K)) and the metric marked dirty for the next
// publish.

#include "topk.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <new>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace {

struct Entry;

// VKey is an entry's key in the value set.
struct VKey {
  double value;
  Entry *e;
};

// TKey is an entry's key in the time set.
struct TKey {
  int64_t ts;
  Entry *e;
};

// ByValue orders entries best first: higher value, then lower host id.
struct ByValue {
  bool operator()(const VKey &a, const VKey &b) const;
};

// ByTime orders entries oldest first, then by address (any strict order
// will do: entries of one timestamp expire together).
struct ByTime {
  bool operator()(const TKey &a, const TKey &b) const {
    if (a.ts != b.ts) return a.ts < b.ts;
    return std::less<const Entry *>()(a.e, b.e);
  }
};

using ValueSet = std::set<VKey, ByValue>;
using TimeSet = std::set<TKey, ByTime>;

struct Entry {
  std::string host;
  double value = 0;
  int64_t ts = 0;
  bool in_top = false;
  ValueSet::iterator vit;  // this entry's node in by_value
  TimeSet::iterator tit;   // this entry's node in by_time
};

inline bool ByValue::operator()(const VKey &a, const VKey &b) const {
  if (a.value != b.value) return a.value > b.value;
  return a.e->host < b.e->host;
}

struct Cached {
  std::string host;
  double value;
  int64_t ts;
  bool operator==(const Cached &o) const {
    return value == o.value && ts == o.ts && host == o.host;
  }
};

struct Metric {
  std::string name;
  uint32_t id = 0;
  // Keys view the Entry's own host string, so lookups by a caller's bytes
  // allocate nothing.
  std::unordered_map<std::string_view, std::unique_ptr<Entry>> hosts;
  ValueSet by_value;
  TimeSet by_time;
  std::vector<Cached> cache;  // the exported top K, best first
  bool dirty = false;         // cache changed since the last publish
};

constexpr uint32_t kHeaderSize = TOPK_SHM_HEADER_SIZE;

// Header is the segment's first 64 bytes (docs/analysis.md).
struct Header {
  uint64_t magic;
  std::atomic<uint64_t> seq;
  uint32_t version;
  uint32_t k;
  uint32_t max_metrics;
  uint32_t metric_count;
  uint32_t name_width;
  uint32_t host_width;
  uint32_t slot_size;
  uint32_t reserved;
  int64_t updated_unix_nano;
  int64_t ttl_ns;
};
static_assert(sizeof(Header) == kHeaderSize, "header is 64 bytes");
static_assert(std::atomic<uint64_t>::is_always_lock_free,
              "the seqlock counter must be lock-free to live in shared memory");
static_assert(TOPK_SHM_SLOT_HEAD % 8 == 0 && TOPK_SHM_ENTRY_SIZE % 8 == 0,
              "slots are 8-byte aligned");

}  // namespace

struct mon_topk {
  uint32_t k = 0;
  int64_t ttl_ns = 0;
  uint32_t max_metrics = 0;
  std::unordered_map<std::string_view, std::unique_ptr<Metric>> metrics;
  std::vector<Metric *> by_id;

  // Shared-memory export; shm == nullptr when disabled.
  std::string shm_name;
  unsigned char *shm = nullptr;
  size_t shm_size = 0;
  uint32_t slot_size = 0;
  uint32_t exported = 0;  // slots in use
  bool any_dirty = false;

  Header *header() { return reinterpret_cast<Header *>(shm); }

  bool expired(const Entry *e, int64_t now_ns) const {
    // ts is in seconds; an entry lives while ts + ttl > now.
    return static_cast<__int128>(e->ts) * 1000000000 + ttl_ns <= now_ns;
  }

  Metric *metric(std::string_view name, bool create) {
    auto it = metrics.find(name);
    if (it != metrics.end()) return it->second.get();
    if (!create || by_id.size() >= max_metrics) return nullptr;
    auto m = std::make_unique<Metric>();
    m->name.assign(name.data(), name.size());
    m->id = static_cast<uint32_t>(by_id.size());
    Metric *p = m.get();
    metrics.emplace(std::string_view(p->name), std::move(m));
    by_id.push_back(p);
    return p;
  }

  // rebuild recomputes m's cache from its set and reports whether it
  // differs from the previous one.
  bool rebuild(Metric &m) {
    for (const Cached &c : m.cache) {
      auto it = m.hosts.find(std::string_view(c.host));
      if (it != m.hosts.end()) it->second->in_top = false;
    }
    std::vector<Cached> next;
    next.reserve(k);
    for (auto it = m.by_value.begin(); it != m.by_value.end() && next.size() < k; ++it) {
      Entry *e = it->e;
      e->in_top = true;
      next.push_back(Cached{e->host, e->value, e->ts});
    }
    if (next == m.cache) return false;
    m.cache.swap(next);
    m.dirty = true;
    any_dirty = true;
    return true;
  }

  // ranks_in_top says whether e, not in the cache, now belongs to the top K.
  bool ranks_in_top(const Metric &m, const Entry *e) const {
    if (m.cache.size() < k) return true;
    const Cached &last = m.cache.back();
    if (e->value != last.value) return e->value > last.value;
    return e->host < last.host;
  }

  bool expire_metric(Metric &m, int64_t now_ns) {
    bool touched = false;
    while (!m.by_time.empty() && expired(m.by_time.begin()->e, now_ns)) {
      Entry *e = m.by_time.begin()->e;
      touched = touched || e->in_top;
      m.by_time.erase(e->tit);
      m.by_value.erase(e->vit);
      m.hosts.erase(std::string_view(e->host));  // frees e
    }
    return touched && rebuild(m);
  }

  void write_name(unsigned char *dst, const std::string &s, size_t width) {
    size_t n = s.size() < width ? s.size() : width;
    std::memcpy(dst, s.data(), n);
    std::memset(dst + n, 0, width - n);
  }

  void write_slot(const Metric &m) {
    unsigned char *slot = shm + kHeaderSize + static_cast<size_t>(m.id) * slot_size;
    write_name(slot, m.name, TOPK_SHM_NAME_WIDTH);
    uint32_t n = static_cast<uint32_t>(m.cache.size());
    std::memcpy(slot + TOPK_SHM_NAME_WIDTH, &n, 4);
    std::memset(slot + TOPK_SHM_NAME_WIDTH + 4, 0, 4);
    unsigned char *e = slot + TOPK_SHM_SLOT_HEAD;
    for (uint32_t i = 0; i < k; i++, e += TOPK_SHM_ENTRY_SIZE) {
      if (i < n) {
        const Cached &c = m.cache[i];
        write_name(e, c.host, TOPK_SHM_HOST_WIDTH);
        std::memcpy(e + TOPK_SHM_HOST_WIDTH, &c.value, 8);
        std::memcpy(e + TOPK_SHM_HOST_WIDTH + 8, &c.ts, 8);
      } else {
        std::memset(e, 0, TOPK_SHM_ENTRY_SIZE);
      }
    }
  }

  void publish(int64_t now_ns) {
    if (shm == nullptr || !any_dirty) return;
    Header *h = header();
    // Seqlock writer: an odd sequence tells readers a write is under way;
    // the release fence keeps the data stores below from becoming visible
    // before it, and the final release store keeps them before the even
    // sequence a reader compares against.
    uint64_t s = h->seq.load(std::memory_order_relaxed);
    h->seq.store(s + 1, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_release);
    for (Metric *m : by_id) {
      if (!m->dirty) continue;
      m->dirty = false;
      if (m->name.size() > TOPK_SHM_NAME_WIDTH) continue;  // not exportable
      write_slot(*m);
      if (m->id + 1 > exported) exported = m->id + 1;
    }
    h->metric_count = exported;
    h->updated_unix_nano = now_ns;
    h->seq.store(s + 2, std::memory_order_release);
    any_dirty = false;
  }

  bool open_shm(const char *name, char *err, size_t errlen) {
    shm_name = name;
    slot_size = TOPK_SHM_SLOT_HEAD + k * TOPK_SHM_ENTRY_SIZE;
    shm_size = kHeaderSize + static_cast<size_t>(max_metrics) * slot_size;
    int fd = shm_open(name, O_CREAT | O_RDWR, 0600);
    if (fd < 0) {
      std::snprintf(err, errlen, "shm_open %s: %s", name, std::strerror(errno));
      return false;
    }
    // Truncating to zero first resets a segment left by an earlier run.
    if (ftruncate(fd, 0) != 0 || ftruncate(fd, static_cast<off_t>(shm_size)) != 0) {
      std::snprintf(err, errlen, "size shm %s to %zu bytes: %s", name, shm_size, std::strerror(errno));
      close(fd);
      shm_unlink(name);
      return false;
    }
    void *p = mmap(nullptr, shm_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED) {
      std::snprintf(err, errlen, "mmap shm %s (%zu bytes): %s", name, shm_size, std::strerror(errno));
      shm_unlink(name);
      return false;
    }
    shm = static_cast<unsigned char *>(p);
    Header *h = new (shm) Header{};  // zeroed, seq 0
    h->version = TOPK_SHM_VERSION;
    h->k = k;
    h->max_metrics = max_metrics;
    h->name_width = TOPK_SHM_NAME_WIDTH;
    h->host_width = TOPK_SHM_HOST_WIDTH;
    h->slot_size = slot_size;
    h->ttl_ns = ttl_ns;
    // The magic goes last: a reader that sees it sees the fields above.
    std::atomic_thread_fence(std::memory_order_release);
    reinterpret_cast<std::atomic<uint64_t> *>(&h->magic)->store(TOPK_SHM_MAGIC, std::memory_order_release);
    return true;
  }
};

extern "C" {

mon_topk *mon_topk_new(uint32_t k, int64_t ttl_ns, uint32_t max_metrics,
                       const char *shm_name, char *err, size_t errlen) {
  if (k == 0 || ttl_ns <= 0 || max_metrics == 0) {
    std::snprintf(err, errlen, "k %u, ttl %lld ns and max metrics %u must be positive", k,
                  static_cast<long long>(ttl_ns), max_metrics);
    return nullptr;
  }
  auto *t = new (std::nothrow) mon_topk();
  if (t == nullptr) {
    std::snprintf(err, errlen, "allocate the engine: out of memory");
    return nullptr;
  }
  t->k = k;
  t->ttl_ns = ttl_ns;
  t->max_metrics = max_metrics;
  if (shm_name != nullptr && shm_name[0] != '\0' && !t->open_shm(shm_name, err, errlen)) {
    delete t;
    return nullptr;
  }
  return t;
}

void mon_topk_free(mon_topk *t) {
  if (t == nullptr) return;
  if (t->shm != nullptr) {
    munmap(t->shm, t->shm_size);
    shm_unlink(t->shm_name.c_str());
  }
  delete t;
}

int64_t mon_topk_update(mon_topk *t, const char *metric, size_t metric_len,
                        const char *host, size_t host_len, double value,
                        int64_t ts, int64_t now_ns) {
  if (!std::isfinite(value) || metric_len == 0 || metric_len > TOPK_MAX_METRIC_LEN ||
      host_len == 0 || host_len > TOPK_MAX_HOST_LEN) {
    return TOPK_ERR_INVALID;
  }
  Entry probe;
  probe.ts = ts;
  if (t->expired(&probe, now_ns)) return TOPK_ERR_STALE;
  Metric *m = t->metric(std::string_view(metric, metric_len), true);
  if (m == nullptr) return TOPK_ERR_METRICS_FULL;
  std::string_view hv(host, host_len);
  auto it = m->hosts.find(hv);
  // An older sample than the stored one (a catch-up replay) is refused
  // before anything moves. The stored one cannot have expired then: it is
  // newer than ts, which has not.
  if (it != m->hosts.end() && ts < it->second->ts) return TOPK_ERR_STALE;
  size_t held = m->hosts.size();
  bool changed = t->expire_metric(*m, now_ns);
  if (m->hosts.size() != held) it = m->hosts.find(hv);  // expiry may have freed it
  Entry *e;
  bool was_top = false;
  if (it == m->hosts.end()) {
    auto owned = std::make_unique<Entry>();
    owned->host.assign(host, host_len);
    owned->value = value;
    owned->ts = ts;
    e = owned.get();
    m->hosts.emplace(std::string_view(e->host), std::move(owned));
    e->vit = m->by_value.insert(VKey{value, e}).first;
    // A new sample is usually the newest: hint the end.
    e->tit = m->by_time.insert(m->by_time.end(), TKey{ts, e});
  } else {
    e = it->second.get();
    was_top = e->in_top;
    if (value != e->value || std::signbit(value) != std::signbit(e->value)) {
      auto node = m->by_value.extract(e->vit);
      e->value = value;
      node.value().value = value;
      e->vit = m->by_value.insert(std::move(node)).position;
    }
    if (ts != e->ts) {
      auto node = m->by_time.extract(e->tit);
      e->ts = ts;
      node.value().ts = ts;
      e->tit = m->by_time.insert(m->by_time.end(), std::move(node));
    }
  }
  if (was_top || t->ranks_in_top(*m, e)) {
    changed = t->rebuild(*m) || changed;
  }
  return (static_cast<int64_t>(m->id) << 1) | (changed ? 1 : 0);
}

size_t mon_topk_expire(mon_topk *t, int64_t now_ns, uint32_t *changed, size_t cap) {
  size_t n = 0;
  for (Metric *m : t->by_id) {
    if (t->expire_metric(*m, now_ns)) {
      if (n < cap) changed[n] = m->id;
      n++;
    }
  }
  return n;
}

void mon_topk_publish(mon_topk *t, int64_t now_ns) { t->publish(now_ns); }

size_t mon_topk_top(mon_topk *t, uint32_t metric_id, uint32_t k, mon_topk_entry *out,
                    char *hosts, size_t hosts_cap) {
  if (metric_id >= t->by_id.size()) return 0;
  const Metric &m = *t->by_id[metric_id];
  size_t n = 0, off = 0;
  for (auto it = m.by_value.begin(); it != m.by_value.end() && n < k; ++it) {
    const Entry *e = it->e;
    if (off + e->host.size() > hosts_cap) break;
    std::memcpy(hosts + off, e->host.data(), e->host.size());
    out[n] = mon_topk_entry{e->value, e->ts, static_cast<uint32_t>(off),
                            static_cast<uint32_t>(e->host.size())};
    off += e->host.size();
    n++;
  }
  return n;
}

size_t mon_topk_len(mon_topk *t, uint32_t metric_id) {
  if (metric_id >= t->by_id.size()) return 0;
  return t->by_id[metric_id]->hosts.size();
}

}  // extern "C"
