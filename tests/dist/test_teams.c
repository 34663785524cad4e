/* tests/dist/test_teams.c - kernel thread teams and placement: the planner on synthetic machines
 * (HWLOC_SYNTHETIC descriptions: disjoint core sets, node locality, even spread, the
 * oversubscription warning and the refusals), real pinning on this machine read back with
 * pthread_getaffinity_np, a thread's default team is its own, a lockstep run is bitwise equal
 * across team sizes and placements, and two concurrent runs with different team sizes equal each
 * run alone. */
#include <pthread.h>
#include <sched.h>

#include "dist/place.h"
#include "nn/threads.h"
#include "tests/dist/dist_fixture.h"

static void load(const char *desc, nnc__topo *t)
{
    cr_assert_eq(nnc__topo_load(desc, t), NNC_OK, "%s: %s", desc, nnc_error_message());
}

/* Every pinned thread has its own core (cpus are distinct and exist), a worker lies inside one
 * node when fits_node, and the workers per node differ by at most one when spread. */
static void check_plan(const nnc__topo *t, const nnc__plan *p, int fits_node, int spread)
{
    cr_assert(p->pinned);
    int n = p->M * p->T;
    for (int i = 0; i < n; i++) {
        int core = -1;
        for (int c = 0; c < t->ncores; c++)
            if (t->core_cpu[c] == p->cpus[i]) core = c;
        cr_assert_geq(core, 0, "cpu %d is no core's first PU", p->cpus[i]);
        for (int j = 0; j < i; j++) cr_assert_neq(p->cpus[i], p->cpus[j], "cpu %d given twice", p->cpus[i]);
        if (fits_node) cr_assert_eq(t->core_node[core], p->node[i / p->T], "worker %d leaves node %d", i / p->T,
                                    p->node[i / p->T]);
    }
    if (spread) {
        int lo = 1 << 30, hi = 0;
        for (int k = 0; k < t->nnodes; k++) {
            int w = 0;
            for (int i = 0; i < p->M; i++) w += p->node[i] == k;
            lo = w < lo ? w : lo;
            hi = w > hi ? w : hi;
        }
        cr_assert_leq(hi - lo, 1, "workers per node range over %d..%d", lo, hi);
    }
}

Test(teams, synthetic_two_packages_smt)
{
    nnc__topo t;
    load("pack:2 numa:1 core:8 pu:2", &t);
    cr_assert_eq(t.ncores, 16);
    cr_assert_eq(t.nnodes, 2);
    cr_assert_eq(t.npackages, 2);
    cr_assert_eq(t.npus, 32);
    cr_assert_eq(t.thissystem, 0);
    nnc__plan p;
    int cases[][2] = {{1, 16}, {2, 8}, {4, 4}, {8, 2}, {16, 1}, {3, 4}, {2, 3}};
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        cr_assert_eq(nnc__plan_make(&t, cases[k][0], cases[k][1], NNC_PLACEMENT_AUTO, &p), NNC_OK);
        check_plan(&t, &p, cases[k][1] <= 8, 1);
        cr_assert_eq(p.warning[0], 0);
        nnc__plan_free(&p);
    }
    /* one PU per core: the second hardware thread of a core is never used */
    cr_assert_eq(nnc__plan_make(&t, 2, 8, NNC_PLACEMENT_AUTO, &p), NNC_OK);
    for (int i = 0; i < 16; i++) cr_assert_eq(p.cpus[i] % 2, 0);
    cr_assert_eq(p.node[0], 0);
    cr_assert_eq(p.node[1], 1);
    nnc__plan_free(&p);
    nnc__topo_free(&t);
}

Test(teams, synthetic_four_packages_eight_nodes)
{
    nnc__topo t;
    load("pack:4 numa:2 core:6 pu:1", &t);
    cr_assert_eq(t.ncores, 48);
    cr_assert_eq(t.nnodes, 8);
    nnc__plan p;
    /* 8 workers x 6: one per node */
    cr_assert_eq(nnc__plan_make(&t, 8, 6, NNC_PLACEMENT_AUTO, &p), NNC_OK);
    check_plan(&t, &p, 1, 1);
    for (int w = 0; w < 8; w++) cr_assert_eq(p.node[w], w);
    nnc__plan_free(&p);
    /* 4 workers x 3: spread over 4 distinct nodes */
    cr_assert_eq(nnc__plan_make(&t, 4, 3, NNC_PLACEMENT_AUTO, &p), NNC_OK);
    check_plan(&t, &p, 1, 0);
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < i; j++) cr_assert_neq(p.node[i], p.node[j]);
    nnc__plan_free(&p);
    /* teams of 8 do not fit a node of 6: each stays inside one package of 12 */
    cr_assert_eq(nnc__plan_make(&t, 3, 8, NNC_PLACEMENT_AUTO, &p), NNC_OK);
    check_plan(&t, &p, 0, 0);
    for (int w = 0; w < 3; w++) {
        int pk = -1;
        for (int i = 0; i < 8; i++) {
            int cpu = p.cpus[w * 8 + i], c = 0;
            while (t.core_cpu[c] != cpu) c++;
            if (pk < 0) pk = t.core_pkg[c];
            cr_assert_eq(t.core_pkg[c], pk, "worker %d spans packages", w);
        }
    }
    nnc__plan_free(&p);
    nnc__topo_free(&t);
}

Test(teams, synthetic_odd_core_count)
{
    nnc__topo t;
    load("pack:1 numa:1 core:7 pu:1", &t);
    nnc__plan p;
    cr_assert_eq(nnc__plan_make(&t, 3, 2, NNC_PLACEMENT_AUTO, &p), NNC_OK);
    check_plan(&t, &p, 1, 0);
    nnc__plan_free(&p);
    cr_assert_eq(nnc__plan_make(&t, 7, 1, NNC_PLACEMENT_AUTO, &p), NNC_OK);
    check_plan(&t, &p, 1, 0);
    nnc__plan_free(&p);
    /* 2 x 4 = 8 threads on 7 cores: allowed, a warning, nothing pinned */
    cr_assert_eq(nnc__plan_make(&t, 2, 4, NNC_PLACEMENT_AUTO, &p), NNC_OK);
    cr_assert_eq(p.pinned, 0);
    cr_assert_eq(p.oversubscribed, 1);
    cr_assert(strstr(p.warning, "oversubscribed"), "%s", p.warning);
    nnc__plan_free(&p);
    nnc__topo_free(&t);
}

Test(teams, more_workers_than_cores_and_refusals)
{
    nnc__topo t;
    load("pack:1 numa:1 core:2 pu:1", &t);
    nnc__plan p;
    cr_assert_eq(nnc__plan_make(&t, 5, 1, NNC_PLACEMENT_AUTO, &p), NNC_OK);
    cr_assert_eq(p.pinned, 0);
    cr_assert(strstr(p.warning, "5 workers x 1 threads = 5 kernel threads on 2 cores"), "%s", p.warning);
    for (int w = 0; w < 5; w++) cr_assert_eq(p.cpus[w], -1);
    nnc__plan_free(&p);
    cr_assert_eq(nnc__plan_make(&t, 2, 1, NNC_PLACEMENT_NONE, &p), NNC_OK);
    cr_assert_eq(p.pinned, 0);
    cr_assert_eq(p.warning[0], 0);
    char js[512];
    cr_assert_gt(nnc__plan_json(&t, &p, 0, js, sizeof js), 0);
    cr_assert(strstr(js, "\"cores\": 2, \"nodes\": 1"), "%s", js);
    cr_assert(strstr(js, "{\"worker\": 1, \"node\": -1, \"cpus\": [-1]}"), "%s", js);
    nnc__plan_free(&p);
    cr_assert_eq(nnc__plan_make(&t, 0, 1, NNC_PLACEMENT_AUTO, &p), NNC_EINVAL);
    cr_assert_eq(nnc__plan_make(&t, 1, 0, NNC_PLACEMENT_AUTO, &p), NNC_EINVAL);
    cr_assert_eq(nnc__plan_make(&t, 64, NNC_TEAM_MAX_THREADS, NNC_PLACEMENT_AUTO, &p), NNC_EINVAL);
    cr_assert_eq(nnc__plan_make(&t, 1, 1, 7, &p), NNC_EINVAL);
    cr_assert_eq(nnc__topo_load("nonsense:3", &t), NNC_EINVAL);
    nnc__topo_free(&t);
}

/* ---- real pinning ---- */
typedef struct aff_rec {
    int cpu[2];   /* the single CPU of thread slot t's affinity, -2 when not single */
} aff_rec;

static int single_cpu(void)
{
    cpu_set_t m;
    CPU_ZERO(&m);
    if (pthread_getaffinity_np(pthread_self(), sizeof m, &m)) return -3;
    if (CPU_COUNT(&m) != 1) return -2;
    for (int i = 0; i < CPU_SETSIZE; i++)
        if (CPU_ISSET(i, &m)) return i;
    return -2;
}

static void aff_task(void *ctx, int task, int thread)
{
    aff_rec *r = ctx;
    (void)task;
    int c = single_cpu();
    if (r->cpu[thread] == -1) r->cpu[thread] = c; /* each slot is written by its own thread only */
    else if (r->cpu[thread] != c) r->cpu[thread] = -4;
    struct timespec ts = {0, 200000};
    nanosleep(&ts, NULL); /* let the other thread take tasks too */
}

Test(teams, pinning_read_back)
{
    nnc__topo t;
    load(NULL, &t);
    if (!t.thissystem || t.ncores < 2) {
        nnc__topo_free(&t);
        cr_skip_test("needs this machine's topology with 2 cores");
    }
    nnc__plan p;
    cr_assert_eq(nnc__plan_make(&t, 1, 2, NNC_PLACEMENT_AUTO, &p), NNC_OK);
    cr_assert(p.pinned);
    cpu_set_t before;
    cr_assert_eq(pthread_getaffinity_np(pthread_self(), sizeof before, &before), 0);
    nnc_team *tm;
    cr_assert_eq(nnc_team_new(2, p.cpus, 0, &tm), NNC_OK, "%s", nnc_error_message());
    cr_assert_eq(nnc_team_size(tm), 2);
    cr_assert_eq(nnc_threads(), 1, "a team is used only once entered");
    cr_assert_eq(nnc_team_enter(tm), NNC_OK, "%s", nnc_error_message());
    cr_assert_eq(nnc_threads(), 2);
    cr_assert_eq(single_cpu(), p.cpus[0], "the entering thread runs on cpus[0]");
    aff_rec r = {{-1, -1}};
    nnc__parallel_for(64, aff_task, &r);
    cr_assert_eq(r.cpu[0], p.cpus[0]);
    cr_assert(r.cpu[1] == -1 || r.cpu[1] == p.cpus[1], "helper thread's affinity %d, expected cpu %d", r.cpu[1],
              p.cpus[1]);
    nnc_team_leave(tm);
    cr_assert_eq(nnc_threads(), 1);
    cpu_set_t after;
    cr_assert_eq(pthread_getaffinity_np(pthread_self(), sizeof after, &after), 0);
    cr_assert(CPU_EQUAL(&before, &after), "affinity restored on leave");
    nnc_team_free(tm);
    nnc__plan_free(&p);
    nnc__topo_free(&t);
}

/* Only the CPUs the process may run on count (taskset, a cgroup cpuset, a batch allocation):
 * with its affinity cut to one CPU, the machine has one core, the plan pins there, and the
 * "all cores" default is 1. */
Test(teams, affinity_mask_limits_the_machine)
{
    cpu_set_t all, one;
    cr_assert_eq(sched_getaffinity(0, sizeof all, &all), 0);
    int first = -1;
    for (int i = 0; i < CPU_SETSIZE && first < 0; i++)
        if (CPU_ISSET(i, &all)) first = i;
    CPU_ZERO(&one);
    CPU_SET(first, &one);
    cr_assert_eq(sched_setaffinity(0, sizeof one, &one), 0);
    cr_assert_eq(nnc_cpu_count(), 1);
    nnc__topo t;
    load(NULL, &t);
    if (!t.thissystem) {
        nnc__topo_free(&t);
        cr_skip_test("hwloc does not describe this machine");
    }
    cr_assert_eq(t.ncores, 1, "the topology keeps only the allowed CPU, found %d cores", t.ncores);
    cr_assert_eq(t.core_cpu[0], first);
    nnc__plan p;
    cr_assert_eq(nnc__plan_make(&t, 1, 1, NNC_PLACEMENT_AUTO, &p), NNC_OK, "%s", nnc_error_message());
    cr_assert_eq(p.cpus[0], first, "pinned to cpu %d, allowed only %d", p.cpus[0], first);
    nnc__plan_free(&p);
    nnc__topo_free(&t);
}

static void *default_team_of_other_thread(void *arg)
{
    *(int *)arg = nnc_threads();
    return NULL;
}

Test(teams, default_team_is_per_thread_and_uncapped)
{
    cr_assert_eq(nnc_set_threads(70), NNC_OK, "%s", nnc_error_message());
    cr_assert_eq(nnc_threads(), 70);
    int other = 0;
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, default_team_of_other_thread, &other), 0);
    pthread_join(th, NULL);
    cr_assert_eq(other, 1, "another thread's default team is its own");
    aff_rec r = {{-1, -1}};
    (void)r;
    cr_assert_eq(nnc_set_threads(1), NNC_OK);
    cr_assert_eq(nnc_threads(), 1);
    cr_assert_eq(nnc_set_threads(0), NNC_EINVAL);
}

/* ---- runs ---- */
static int t_cores(void)
{
    nnc__topo t;
    load(NULL, &t);
    int n = t.ncores;
    nnc__topo_free(&t);
    return n;
}

static nnc_train_config lockstep_config(int tpw, nnc_placement pl)
{
    nnc_train_config c = fx_config(NNC_ALGO_MGRAWA, 2);
    c.sync = NNC_SYNC_LOCKSTEP;
    c.tau = 2;
    c.epochs = 2;
    c.threads_per_worker = tpw;
    c.placement = pl;
    return c;
}

Test(teams, lockstep_bitwise_across_team_sizes_and_placements, .timeout = 180)
{
    nnc_dataset *tr = fx_dataset(256, 1);
    struct { int tpw; nnc_placement pl; } v[] = {{1, NNC_PLACEMENT_AUTO}, {1, NNC_PLACEMENT_NONE},
                                                 {2, NNC_PLACEMENT_NONE}, {2, NNC_PLACEMENT_AUTO}};
    uint64_t h0 = 0;
    char d0[64];
    for (size_t k = 0; k < sizeof v / sizeof *v; k++) {
        nnc_train_config c = lockstep_config(v[k].tpw, v[k].pl);
        fx_trace t;
        nnc_train_result r;
        char d[64];
        c.ckpt_dir = fx_tmpdir(d, sizeof d);
        fx_hook(&c, &t);
        cr_assert_eq(nnc_train(&c, tr, NULL, &r), NNC_OK, "%s", nnc_error_message());
        cr_assert_eq(r.threads_per_worker, v[k].tpw);
        cr_assert(strstr(r.placement, "\"workers\": [{\"worker\": 0"), "%s", r.placement);
        /* the plan once, after the oversubscription warning where there is one (2 x 2 on 2 cores) */
        int over = 2 * v[k].tpw > t_cores();
        cr_assert_eq(t.plan_logs, 1 + over, "%d plan lines", t.plan_logs);
        cr_assert(!over || strstr(t.plan[0], "oversubscribed"), "%s", t.plan[0]);
        cr_assert(strstr(t.plan[over], "placement: 2 workers"), "%s", t.plan[over]);
        cr_assert_gt(t.rounds, 3);
        if (k == 0) {
            h0 = t.hash;
            memcpy(d0, d, sizeof d);
        } else {
            cr_assert_eq(t.hash, h0, "threads per worker %d, placement %d: the round trace differs", v[k].tpw,
                         (int)v[k].pl);
            nnc_model *a = fx_load_model(d0, "last.ckpt", ""), *b = fx_load_model(d, "last.ckpt", "");
            cr_assert(fx_same_params(a, b), "center differs for threads per worker %d", v[k].tpw);
            nnc_model_free(a);
            nnc_model_free(b);
            fx_rmdir(d);
        }
    }
    fx_rmdir(d0);
    fx_dataset_free(tr);
}

typedef struct run_job {
    nnc_train_config c;
    const nnc_dataset *tr;
    fx_trace t;
    nnc_train_result r;
    int status;
} run_job;

static void *run_job_main(void *arg)
{
    run_job *j = arg;
    fx_hook(&j->c, &j->t);
    j->status = nnc_train(&j->c, j->tr, NULL, &j->r);
    return NULL;
}

Test(teams, two_concurrent_runs_with_different_team_sizes, .timeout = 180)
{
    nnc_dataset *tr = fx_dataset(256, 1);
    run_job alone[2], both[2];
    for (int k = 0; k < 2; k++) {
        /* run 0: 2 workers x 1 thread; run 1: one replica of 2 threads */
        nnc_train_config c = k == 0 ? lockstep_config(1, NNC_PLACEMENT_AUTO) : fx_config(NNC_ALGO_SGD, 1);
        if (k == 1) c.threads = 2;
        alone[k] = (run_job){.c = c, .tr = tr};
        both[k] = (run_job){.c = c, .tr = tr};
        run_job_main(&alone[k]);
    }
    pthread_t th[2];
    for (int k = 0; k < 2; k++) cr_assert_eq(pthread_create(&th[k], NULL, run_job_main, &both[k]), 0);
    for (int k = 0; k < 2; k++) pthread_join(th[k], NULL);
    for (int k = 0; k < 2; k++) {
        cr_assert_eq(alone[k].status, NNC_OK);
        cr_assert_eq(both[k].status, NNC_OK);
        cr_assert_eq(alone[k].t.hash, both[k].t.hash, "run %d differs when run beside another", k);
        cr_assert_eq(alone[k].r.steps, both[k].r.steps);
        cr_assert_eq(memcmp(&alone[k].r.train_loss, &both[k].r.train_loss, sizeof(double)), 0);
    }
    cr_assert_eq(both[0].r.threads_per_worker, 1);
    cr_assert_eq(both[1].r.threads_per_worker, 2);
    fx_dataset_free(tr);
}

/* Precision travels with the run (nn/precision.h): a BF16 run and an FP32 run side by side in one
 * process each give the bits they give alone, a BF16 run differs from the same run in FP32 (the
 * setting reached the ops), and nnc_train gives the calling thread its precision back. Run 0 is
 * a lockstep GRAWA run of 2 workers, run 1 one replica of 2 threads. */
Test(teams, concurrent_runs_with_different_precisions, .timeout = 240)
{
    if (!nnc_precision_bf16_available()) cr_skip_test("this CPU (or NNC_ISA) has no AVX512_BF16");
    nnc_dataset *tr = fx_dataset(256, 1);
    run_job alone[2][2], both[2][2]; /* [precision pairing][run] */
    for (int pairing = 0; pairing < 2; pairing++)
        for (int k = 0; k < 2; k++) {
            nnc_train_config c = k == 0 ? lockstep_config(1, NNC_PLACEMENT_NONE) : fx_config(NNC_ALGO_SGD, 1);
            if (k == 1) c.threads = 2;
            c.precision = (k ^ pairing) ? NNC_PRECISION_BF16 : NNC_PRECISION_FP32;
            alone[pairing][k] = (run_job){.c = c, .tr = tr};
            both[pairing][k] = (run_job){.c = c, .tr = tr};
            run_job_main(&alone[pairing][k]);
            cr_assert_eq(alone[pairing][k].status, NNC_OK, "%s", nnc_error_message());
            cr_assert_eq(nnc_get_precision(), NNC_PRECISION_FP32, "nnc_train left the caller's precision changed");
        }
    for (int k = 0; k < 2; k++)
        cr_assert(alone[0][k].t.hash != alone[1][k].t.hash ||
                      memcmp(&alone[0][k].r.train_loss, &alone[1][k].r.train_loss, sizeof(double)),
                  "run %d: the same trace and loss in FP32 and BF16", k);
    for (int pairing = 0; pairing < 2; pairing++) {
        pthread_t th[2];
        for (int k = 0; k < 2; k++) cr_assert_eq(pthread_create(&th[k], NULL, run_job_main, &both[pairing][k]), 0);
        for (int k = 0; k < 2; k++) pthread_join(th[k], NULL);
        for (int k = 0; k < 2; k++) {
            const run_job *a = &alone[pairing][k], *b = &both[pairing][k];
            cr_assert_eq(b->status, NNC_OK);
            cr_assert_eq(a->t.hash, b->t.hash, "run %d (%s) differs when run beside one in the other precision", k,
                         nnc_precision_name(a->c.precision));
            cr_assert_eq(a->r.steps, b->r.steps);
            cr_assert_eq(memcmp(&a->r.train_loss, &b->r.train_loss, sizeof(double)), 0);
        }
    }
    fx_dataset_free(tr);
}

/* A team carries its precision: set on one team, it is what a thread that enters it reads, and
 * leaving gives the thread its default team's back. */
Test(teams, team_precision_follows_the_current_team)
{
    if (!nnc_precision_bf16_available()) cr_skip_test("this CPU (or NNC_ISA) has no AVX512_BF16");
    nnc_team *t;
    cr_assert_eq(nnc_team_new(1, NULL, 0, &t), NNC_OK);
    cr_assert_eq(nnc_team_precision(t), NNC_PRECISION_FP32);
    cr_assert_eq(nnc_team_set_precision(t, NNC_PRECISION_BF16), NNC_OK);
    cr_assert_eq(nnc_get_precision(), NNC_PRECISION_FP32);
    cr_assert_eq(nnc_team_enter(t), NNC_OK);
    cr_assert_eq(nnc_get_precision(), NNC_PRECISION_BF16);
    cr_assert_eq(nnc_set_precision(NNC_PRECISION_FP32), NNC_OK); /* the entered team's */
    cr_assert_eq(nnc_team_precision(t), NNC_PRECISION_FP32);
    nnc_team_leave(t);
    cr_assert_eq(nnc_set_precision(NNC_PRECISION_BF16), NNC_OK); /* the default team's */
    cr_assert_eq(nnc_team_precision(t), NNC_PRECISION_FP32);
    cr_assert_eq(nnc_team_precision(NULL), NNC_PRECISION_BF16);
    cr_assert_eq(nnc_set_precision(NNC_PRECISION_FP32), NNC_OK);
    nnc_team_free(t);
}
