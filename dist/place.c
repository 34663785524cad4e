/* dist/place.c - topology through hwloc and the placement planner (see dist/place.h). */
#include "dist/place.h"

#include <hwloc.h>
#include <stdio.h>
#include <string.h>

#include "dist/dist.h"
#include "nn/alloc.h"
#include "nn/status.h"
#include "nn/threads.h"

void nnc__topo_free(nnc__topo *t)
{
    if (!t) return;
    nnc__free(t->core_node);
    nnc__free(t->core_pkg);
    nnc__free(t->core_cpu);
    memset(t, 0, sizeof *t);
}

int nnc__topo_load(const char *synthetic, nnc__topo *out)
{
    memset(out, 0, sizeof *out);
    hwloc_topology_t h;
    if (hwloc_topology_init(&h)) return nnc__fail(NNC_ENOMEM, "topology: hwloc cannot start");
    if (synthetic && hwloc_topology_set_synthetic(h, synthetic)) {
        hwloc_topology_destroy(h);
        return nnc__fail(NNC_EINVAL, "topology: hwloc rejects the synthetic description '%s'", synthetic);
    }
    if (hwloc_topology_load(h)) {
        hwloc_topology_destroy(h);
        return nnc__fail(NNC_EIO, "topology: hwloc cannot read this machine's topology");
    }
    /* This machine: only the CPUs the calling thread may run on (taskset, a cgroup cpuset, a
     * batch scheduler's allocation) count, so nothing is planned or pinned outside them. The
     * thread's set, as nnc_cpu_count reads it: a process-wide query would be the union over every
     * thread, including OpenBLAS's, which keep the mask they started with. */
    if (!synthetic && hwloc_topology_is_thissystem(h)) {
        hwloc_bitmap_t set = hwloc_bitmap_alloc();
        if (set && !hwloc_get_cpubind(h, set, HWLOC_CPUBIND_THREAD) && !hwloc_bitmap_iszero(set) &&
            !hwloc_bitmap_isincluded(hwloc_topology_get_topology_cpuset(h), set))
            (void)hwloc_topology_restrict(h, set, HWLOC_RESTRICT_FLAG_REMOVE_CPULESS);
        hwloc_bitmap_free(set);
    }
    int s = NNC_OK;
    int nc = hwloc_get_nbobjs_by_type(h, HWLOC_OBJ_CORE);
    int nn = hwloc_get_nbobjs_by_type(h, HWLOC_OBJ_NUMANODE);
    int np = hwloc_get_nbobjs_by_type(h, HWLOC_OBJ_PACKAGE);
    int npu = hwloc_get_nbobjs_by_type(h, HWLOC_OBJ_PU);
    hwloc_obj_type_t unit = HWLOC_OBJ_CORE;
    if (nc <= 0) { /* no core level (some VMs): one core per PU */
        unit = HWLOC_OBJ_PU;
        nc = npu;
    }
    if (nc <= 0) {
        hwloc_topology_destroy(h);
        return nnc__fail(NNC_EIO, "topology: hwloc finds no cores");
    }
    out->ncores = nc;
    out->nnodes = nn > 0 ? nn : 1;
    out->npackages = np > 0 ? np : 1;
    out->npus = npu > 0 ? npu : nc;
    out->thissystem = hwloc_topology_is_thissystem(h);
    out->core_node = nnc__calloc((size_t)nc, sizeof(int));
    out->core_pkg = nnc__calloc((size_t)nc, sizeof(int));
    out->core_cpu = nnc__calloc((size_t)nc, sizeof(int));
    if (!out->core_node || !out->core_pkg || !out->core_cpu) {
        s = nnc__fail(NNC_ENOMEM, "topology: out of memory for %d cores", nc);
        goto done;
    }
    for (int c = 0; c < nc; c++) {
        hwloc_obj_t o = hwloc_get_obj_by_type(h, unit, (unsigned)c);
        hwloc_obj_t pu = o->type == HWLOC_OBJ_PU ? o : hwloc_get_obj_inside_cpuset_by_type(h, o->cpuset, HWLOC_OBJ_PU, 0);
        out->core_cpu[c] = pu ? (int)pu->os_index : c;
        hwloc_obj_t pk = hwloc_get_ancestor_obj_by_type(h, HWLOC_OBJ_PACKAGE, o);
        out->core_pkg[c] = pk ? (int)pk->logical_index : 0;
        out->core_node[c] = 0;
        for (int k = 0; k < nn; k++) {
            hwloc_obj_t nd = hwloc_get_obj_by_type(h, HWLOC_OBJ_NUMANODE, (unsigned)k);
            if (nd && nd->cpuset && hwloc_bitmap_isincluded(o->cpuset, nd->cpuset)) {
                out->core_node[c] = k;
                break;
            }
        }
    }
done:
    hwloc_topology_destroy(h);
    if (s) nnc__topo_free(out);
    return s;
}

void nnc__plan_free(nnc__plan *p)
{
    if (!p) return;
    nnc__free(p->node);
    nnc__free(p->cpus);
    memset(p, 0, sizeof *p);
}

int nnc__plan_make(const nnc__topo *t, int M, int T, int placement, nnc__plan *out)
{
    memset(out, 0, sizeof *out);
    if (M < 1 || T < 1)
        return nnc__fail(NNC_EINVAL, "placement: workers and threads per worker must be >= 1, found %d and %d", M, T);
    if ((long)M * T > NNC_TEAM_MAX_THREADS)
        return nnc__fail(NNC_EINVAL, "placement: %d workers x %d threads = %ld kernel threads, at most %d", M, T,
                         (long)M * T, NNC_TEAM_MAX_THREADS);
    if (placement != NNC_PLACEMENT_AUTO && placement != NNC_PLACEMENT_NONE)
        return nnc__fail(NNC_EINVAL, "placement: unknown placement %d (expected auto or none)", placement);
    out->M = M;
    out->T = T;
    out->node = nnc__calloc((size_t)M, sizeof(int));
    out->cpus = nnc__calloc((size_t)M * T, sizeof(int));
    int K = t->nnodes, C = t->ncores;
    int *freec = nnc__calloc((size_t)K, sizeof(int)), *wcount = nnc__calloc((size_t)K * 2, sizeof(int));
    char *used = nnc__calloc((size_t)C, 1);
    if (!out->node || !out->cpus || !freec || !wcount || !used) {
        nnc__free(freec);
        nnc__free(wcount);
        nnc__free(used);
        nnc__plan_free(out);
        return nnc__fail(NNC_ENOMEM, "placement: out of memory for %d workers", M);
    }
    for (int w = 0; w < M; w++) out->node[w] = -1;
    for (long i = 0; i < (long)M * T; i++) out->cpus[i] = -1;
    out->oversubscribed = (long)M * T > C;
    if (out->oversubscribed)
        snprintf(out->warning, sizeof out->warning,
                 "warning: %d workers x %d threads = %ld kernel threads on %d cores: oversubscribed, "
                 "threads not pinned", M, T, (long)M * T, C);
    if (placement == NNC_PLACEMENT_NONE || out->oversubscribed) goto done;
    for (int c = 0; c < C; c++) freec[t->core_node[c]]++;
    int *node_pkg = wcount + K;
    for (int k = 0; k < K; k++) node_pkg[k] = -1;
    for (int c = 0; c < C; c++)
        if (node_pkg[t->core_node[c]] < 0) node_pkg[t->core_node[c]] = t->core_pkg[c];
    for (int w = 0; w < M; w++) {
        int best = -1;
        for (int k = 0; k < K; k++) {
            if (freec[k] < T) continue;
            if (best < 0 || wcount[k] < wcount[best] || (wcount[k] == wcount[best] && freec[k] > freec[best]))
                best = k;
        }
        int *mine = out->cpus + (size_t)w * T, got = 0;
        if (best >= 0) {
            for (int c = 0; c < C && got < T; c++)
                if (!used[c] && t->core_node[c] == best) {
                    used[c] = 1;
                    mine[got++] = t->core_cpu[c];
                }
            freec[best] -= T;
            out->node[w] = best;
        } else {
            /* Spans nodes: the fullest node first (ties: lowest index), then the fullest nodes of
             * its package, then of any package. */
            while (got < T) {
                int k = -1;
                int pk = out->node[w] >= 0 ? node_pkg[out->node[w]] : -1;
                for (int j = 0; j < K; j++)
                    if (freec[j] > 0 && node_pkg[j] == pk && (k < 0 || freec[j] > freec[k])) k = j;
                if (k < 0) {
                    k = 0;
                    for (int j = 1; j < K; j++)
                        if (freec[j] > freec[k]) k = j;
                }
                if (out->node[w] < 0) out->node[w] = k;
                for (int c = 0; c < C && got < T; c++)
                    if (!used[c] && t->core_node[c] == k) {
                        used[c] = 1;
                        freec[k]--;
                        mine[got++] = t->core_cpu[c];
                    }
            }
        }
        wcount[out->node[w]]++;
    }
    out->pinned = 1;
done:
    nnc__free(freec);
    nnc__free(wcount);
    nnc__free(used);
    return NNC_OK;
}

int nnc__plan_json(const nnc__topo *t, const nnc__plan *p, int first_worker, char *buf, size_t n)
{
    size_t o = 0;
    int full = 1;
#define PUT(...) \
    do { \
        int k_ = snprintf(buf + o, o < n ? n - o : 0, __VA_ARGS__); \
        o += k_ > 0 ? (size_t)k_ : 0; \
    } while (0)
    PUT("{\"cores\": %d, \"nodes\": %d, \"packages\": %d, \"threads_per_worker\": %d, \"pinned\": %s, "
        "\"workers\": [", t->ncores, t->nnodes, t->npackages, p->T, p->pinned ? "true" : "false");
    size_t head = o;
    for (int w = 0; w < p->M; w++) {
        PUT("%s{\"worker\": %d, \"node\": %d, \"cpus\": [", w ? ", " : "", first_worker + w, p->node[w]);
        for (int i = 0; i < p->T; i++) PUT("%s%d", i ? ", " : "", p->cpus[(size_t)w * p->T + i]);
        PUT("]}");
    }
    PUT("]}");
    if (o >= n) {
        full = 0;
        o = head < n ? head : 0;
        if (n) buf[o] = 0;
        if (o + 3 <= n) {
            memcpy(buf + o, "]}", 3);
            o += 2;
        }
    }
#undef PUT
    return full ? (int)o : -1;
}

void nnc__plan_line(const nnc__topo *t, const nnc__plan *p, int first_worker, char *buf, size_t n)
{
    size_t o = 0;
#define PUT(...) \
    do { \
        int k_ = snprintf(buf + o, o < n ? n - o : 0, __VA_ARGS__); \
        o += k_ > 0 ? (size_t)k_ : 0; \
    } while (0)
    PUT("placement: %d worker%s x %d thread%s on %d cores, %d node%s, %d package%s: ", p->M, p->M == 1 ? "" : "s",
        p->T, p->T == 1 ? "" : "s", t->ncores, t->nnodes, t->nnodes == 1 ? "" : "s", t->npackages,
        t->npackages == 1 ? "" : "s");
    if (!p->pinned) {
        PUT("not pinned");
    } else {
        for (int w = 0; w < p->M; w++) {
            PUT("%sw%d node %d cpus ", w ? " | " : "", first_worker + w, p->node[w]);
            for (int i = 0; i < p->T; i++) PUT("%s%d", i ? "," : "", p->cpus[(size_t)w * p->T + i]);
        }
    }
#undef PUT
    if (n && o >= n) buf[n - 1] = 0;
}
