/* optim/sched.c - learning-rate schedules: a pure function of (schedule, step, elapsed). */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "optim/optim.h"

static const char *const kind_names[] = {"constant", "step", "multistep", "cosine", "time-drop"};
#define NKINDS ((int)(sizeof kind_names / sizeof kind_names[0]))

nnc_sched nnc_sched_default(void)
{
    nnc_sched s;
    memset(&s, 0, sizeof s);
    s.kind = NNC_SCHED_CONSTANT;
    s.base_lr = 0.1f;
    s.gamma = 0.1f;
    s.step_epochs = 30;
    s.steps_per_epoch = 1;
    return s;
}

int nnc_sched_parse_kind(const char *str, nnc_sched_kind *out)
{
    for (int i = 0; i < NKINDS; i++)
        if (str && strcmp(str, kind_names[i]) == 0) {
            *out = (nnc_sched_kind)i;
            return NNC_OK;
        }
    return nnc__fail(NNC_EINVAL, "schedule: unknown kind '%s' (expected constant, step, multistep, cosine "
                     "or time-drop)", str ? str : "(null)");
}

const char *nnc_sched_kind_name(nnc_sched_kind k)
{
    return (int)k >= 0 && (int)k < NKINDS ? kind_names[k] : "unknown";
}

int nnc_sched_parse_milestones(const char *text, nnc_sched *s)
{
    int n = 0, ms[NNC_SCHED_MAX_MILESTONES];
    const char *p = text;
    if (!text || !*text) return nnc__fail(NNC_EINVAL, "milestones: empty list (expected e.g. \"100,150\")");
    for (;;) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 0 || v > 1000000000L)
            return nnc__fail(NNC_EINVAL, "milestones '%s': at offset %d expected an epoch number >= 0",
                             text, (int)(p - text));
        if (n == NNC_SCHED_MAX_MILESTONES)
            return nnc__fail(NNC_EINVAL, "milestones '%s': more than %d values", text, NNC_SCHED_MAX_MILESTONES);
        if (n > 0 && v <= ms[n - 1])
            return nnc__fail(NNC_EINVAL, "milestones '%s': %ld after %d, expected ascending epochs", text, v,
                             ms[n - 1]);
        ms[n++] = (int)v;
        if (*end == '\0') break;
        if (*end != ',')
            return nnc__fail(NNC_EINVAL, "milestones '%s': at offset %d expected ',' found '%c'", text,
                             (int)(end - text), *end);
        p = end + 1;
    }
    memcpy(s->milestones, ms, sizeof(int) * (size_t)n);
    s->nmilestones = n;
    return NNC_OK;
}

int nnc_sched_check(const nnc_sched *s)
{
    if ((int)s->kind < 0 || (int)s->kind >= NKINDS)
        return nnc__fail(NNC_EINVAL, "schedule: kind %d out of range", (int)s->kind);
    if (!isfinite(s->base_lr) || s->base_lr < 0)
        return nnc__fail(NNC_EINVAL, "schedule: lr must be finite and >= 0, found %g", (double)s->base_lr);
    if (!isfinite(s->min_lr) || s->min_lr < 0)
        return nnc__fail(NNC_EINVAL, "schedule: min lr must be finite and >= 0, found %g", (double)s->min_lr);
    if (!isfinite(s->gamma) || s->gamma <= 0)
        return nnc__fail(NNC_EINVAL, "schedule: gamma must be finite and > 0, found %g", (double)s->gamma);
    if (s->warmup_steps < 0)
        return nnc__fail(NNC_EINVAL, "schedule: warm-up steps must be >= 0, found %ld", s->warmup_steps);
    if (s->total_steps < 0)
        return nnc__fail(NNC_EINVAL, "schedule: total steps must be >= 0, found %ld", s->total_steps);
    if (isnan(s->drop_seconds))
        return nnc__fail(NNC_EINVAL, "schedule: drop seconds must be a number (<= 0: never), found nan");
    if (s->kind == NNC_SCHED_STEP && s->step_epochs <= 0)
        return nnc__fail(NNC_EINVAL, "schedule step: step epochs must be > 0, found %d", s->step_epochs);
    if ((s->kind == NNC_SCHED_STEP || s->kind == NNC_SCHED_MULTISTEP) && s->steps_per_epoch <= 0)
        return nnc__fail(NNC_EINVAL, "schedule %s: steps per epoch must be > 0, found %ld",
                         nnc_sched_kind_name(s->kind), s->steps_per_epoch);
    if (s->kind == NNC_SCHED_MULTISTEP) {
        if (s->nmilestones < 1 || s->nmilestones > NNC_SCHED_MAX_MILESTONES)
            return nnc__fail(NNC_EINVAL, "schedule multistep: expected 1..%d milestones, found %d",
                             NNC_SCHED_MAX_MILESTONES, s->nmilestones);
        for (int i = 1; i < s->nmilestones; i++)
            if (s->milestones[i] <= s->milestones[i - 1])
                return nnc__fail(NNC_EINVAL, "schedule multistep: milestone %d (%d) not after %d", i,
                                 s->milestones[i], s->milestones[i - 1]);
    }
    if (s->kind == NNC_SCHED_COSINE && s->total_steps <= 0)
        return nnc__fail(NNC_EINVAL, "schedule cosine: total steps must be > 0, found %ld", s->total_steps);
    if (s->kind == NNC_SCHED_COSINE && s->min_lr > s->base_lr)
        return nnc__fail(NNC_EINVAL, "schedule cosine: min lr %g above lr %g", (double)s->min_lr,
                         (double)s->base_lr);
    return NNC_OK;
}

static double schedule(const nnc_sched *s, long step, double elapsed_s)
{
    long spe = s->steps_per_epoch > 0 ? s->steps_per_epoch : 1;
    long epoch = step / spe;
    double lr = s->base_lr;
    switch (s->kind) {
    case NNC_SCHED_CONSTANT:
        return lr;
    case NNC_SCHED_STEP:
        return s->step_epochs > 0 ? lr * pow(s->gamma, (double)(epoch / s->step_epochs)) : lr;
    case NNC_SCHED_MULTISTEP: {
        int k = 0;
        for (int i = 0; i < s->nmilestones && i < NNC_SCHED_MAX_MILESTONES; i++)
            if (s->milestones[i] <= epoch) k++;
        return lr * pow(s->gamma, k);
    }
    case NNC_SCHED_COSINE: {
        if (s->total_steps <= 0) return lr;
        double t = (double)(step < s->total_steps ? step : s->total_steps);
        return s->min_lr + (lr - s->min_lr) * 0.5 * (1.0 + cos(M_PI * t / (double)s->total_steps));
    }
    case NNC_SCHED_TIME_DROP:
        return s->drop_seconds > 0 && elapsed_s >= s->drop_seconds ? lr * s->gamma : lr;
    }
    return lr;
}

float nnc_sched_lr(const nnc_sched *s, long step, double elapsed_s)
{
    if (step < 0) step = 0;
    double lr = schedule(s, step, elapsed_s);
    if (step < s->warmup_steps) lr = lr * (double)(step + 1) / (double)s->warmup_steps;
    return (float)lr;
}
