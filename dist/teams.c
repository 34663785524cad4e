/* dist/teams.c - a run's kernel thread teams: the placement plan of this rank's workers over
 * the machine's topology (dist/place.c plans, this file applies), one team per worker, and each
 * replica built on its worker's cores so its memory is first touched on that worker's node. */
#include <pthread.h>
#include <sched.h>
#include <stdio.h>

#include "dist/run.h"
#include "nn/threads.h"

/* The topology, the placement plan of this rank's workers and their teams (not entered yet). */
int nnc__run_plan_teams(nnc_run *R)
{
    nnc_train_config *c = &R->c;
    int s = nnc__topo_load(NULL, &R->topo);
    if (s) return s;
    int cores = R->topo.ncores;
    if (R->M == 1)
        R->tpw = c->threads_per_worker > 0 ? c->threads_per_worker : c->threads;
    else
        R->tpw = c->threads_per_worker > 0 ? c->threads_per_worker : (cores / R->nloc > 1 ? cores / R->nloc : 1);
    /* Several ranks may share one machine: pin nothing then. So does a topology that is not this
     * machine's (HWLOC_SYNTHETIC, HWLOC_XMLFILE). */
    int place = c->placement;
    if (R->tp->size > 1 || !R->topo.thissystem) place = NNC_PLACEMENT_NONE;
    if ((s = nnc__plan_make(&R->topo, R->nloc, R->tpw, place, &R->place))) return s;
    if (R->place.warning[0]) nnc__run_log(R, "%s", R->place.warning);
    char line[700];
    nnc__plan_line(&R->topo, &R->place, R->lo, line, sizeof line);
    nnc__run_log(R, "%s", line);
    nnc__plan_json(&R->topo, &R->place, R->lo, R->res->placement, sizeof R->res->placement);
    R->res->threads_per_worker = R->tpw;
    /* The center reduction's nodes (dist/parked.c): the plan's, or where an automatic plan would
     * put the workers when nothing is pinned (a synthetic topology, placement none), so the
     * reduction is grouped as it would be on that machine. */
    nnc__plan np = R->place;
    int own = 0;
    if (!np.pinned && nnc__plan_make(&R->topo, R->nloc, R->tpw, NNC_PLACEMENT_AUTO, &np) == NNC_OK) own = 1;
    for (int w = 0; w < R->nloc; w++) R->rnode[R->lo + w] = np.pinned && np.node[w] >= 0 ? np.node[w] : 0;
    if (own) nnc__plan_free(&np);
    long pus = R->topo.npus;
    int short_spin = (long)R->nloc * R->tpw > pus;
    for (int w = 0; w < R->nloc; w++)
        if ((s = nnc_team_new(R->tpw, R->place.pinned ? R->place.cpus + (size_t)w * R->tpw : NULL, short_spin,
                              &R->team[R->lo + w])))
            return nnc__fail_prefix(s, "training: worker %d's team of %d threads", R->lo + w, R->tpw);
    for (int w = 0; w < R->nloc; w++) /* each team runs its ops in the run's precision */
        if ((s = nnc_team_set_precision(R->team[R->lo + w], c->precision))) return s;
    return NNC_OK;
}

/* Replica i is built on a thread pinned to its worker's cores when the plan pins it (several
 * workers): the pages its parameters, optimizer state and buffers first touch then come from
 * that worker's NUMA node (Linux's first-touch policy; its graph's activations are allocated by
 * the worker thread itself at the first step). */
typedef struct rep_job {
    nnc_run *R;
    int i, s;
    char msg[1024];
} rep_job;

static void *rep_job_main(void *arg)
{
    rep_job *j = arg;
    j->s = nnc__replica_new(j->R->scratch, j->R->train, &j->R->c, j->i, j->R->M, &j->R->rep[j->i]);
    if (j->s) snprintf(j->msg, sizeof j->msg, "%s", nnc_error_message());
    return NULL;
}

int nnc__run_replica_new_placed(nnc_run *R, int i)
{
    if (R->M == 1 || !R->place.pinned || i < R->lo || i >= R->hi)
        return nnc__replica_new(R->scratch, R->train, &R->c, i, R->M, &R->rep[i]);
    const int *cpus = R->place.cpus + (size_t)(i - R->lo) * R->tpw;
    cpu_set_t set;
    CPU_ZERO(&set);
    for (int t = 0; t < R->tpw; t++)
        if (cpus[t] >= 0 && cpus[t] < CPU_SETSIZE) CPU_SET(cpus[t], &set);
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setaffinity_np(&at, sizeof set, &set);
    rep_job j = {.R = R, .i = i};
    pthread_t th;
    int e = pthread_create(&th, &at, rep_job_main, &j);
    pthread_attr_destroy(&at);
    if (e) return nnc__replica_new(R->scratch, R->train, &R->c, i, R->M, &R->rep[i]);
    pthread_join(th, NULL);
    return j.s ? nnc__fail(j.s, "%s", j.msg) : NNC_OK;
}
