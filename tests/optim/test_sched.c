/* tests/optim/test_sched.c - learning-rate schedules at boundary steps: step,
 * multistep, cosine end points, warm-up continuity, time-drop before/after, resume purity,
 * parsing and validation messages. */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "nn/nnc.h"

#define EQ(a, b) cr_assert_float_eq((a), (b), 1e-7 * fmax(1.0, fabs((double)(b))), "%s", #a)

Test(optim_sched, constant_and_defaults)
{
    nnc_sched s = nnc_sched_default();
    cr_assert_eq(s.kind, NNC_SCHED_CONSTANT);
    cr_assert_eq(nnc_sched_check(&s), NNC_OK);
    EQ(nnc_sched_lr(&s, 0, 0), 0.1f);
    EQ(nnc_sched_lr(&s, 123456, 1e6), 0.1f);
}

Test(optim_sched, step_boundaries)
{
    nnc_sched s = nnc_sched_default();
    s.kind = NNC_SCHED_STEP;
    s.base_lr = 0.2f;
    s.gamma = 0.5f;
    s.step_epochs = 3;
    s.steps_per_epoch = 10; /* drops at steps 30, 60 */
    EQ(nnc_sched_lr(&s, 0, 0), 0.2f);
    EQ(nnc_sched_lr(&s, 29, 0), 0.2f);
    EQ(nnc_sched_lr(&s, 30, 0), 0.1f);
    EQ(nnc_sched_lr(&s, 59, 0), 0.1f);
    EQ(nnc_sched_lr(&s, 60, 0), 0.05f);
}

Test(optim_sched, multistep_boundaries)
{
    nnc_sched s = nnc_sched_default();
    s.kind = NNC_SCHED_MULTISTEP;
    s.base_lr = 0.1f;
    s.steps_per_epoch = 391;
    cr_assert_eq(nnc_sched_parse_milestones("100,150", &s), NNC_OK);
    cr_assert_eq(s.nmilestones, 2);
    cr_assert_eq(nnc_sched_check(&s), NNC_OK);
    EQ(nnc_sched_lr(&s, 100 * 391 - 1, 0), 0.1f);
    EQ(nnc_sched_lr(&s, 100 * 391, 0), 0.01f);
    EQ(nnc_sched_lr(&s, 150 * 391 - 1, 0), 0.01f);
    EQ(nnc_sched_lr(&s, 150 * 391, 0), 0.001f);
    EQ(nnc_sched_lr(&s, 1000 * 391, 0), 0.001f);
}

Test(optim_sched, cosine_end_points_and_midpoint)
{
    nnc_sched s = nnc_sched_default();
    s.kind = NNC_SCHED_COSINE;
    s.base_lr = 0.1f;
    s.min_lr = 0.001f;
    s.total_steps = 1000;
    cr_assert_eq(nnc_sched_check(&s), NNC_OK);
    EQ(nnc_sched_lr(&s, 0, 0), 0.1f);
    EQ(nnc_sched_lr(&s, 500, 0), 0.0505f);
    EQ(nnc_sched_lr(&s, 1000, 0), 0.001f);
    EQ(nnc_sched_lr(&s, 5000, 0), 0.001f); /* clamped past the horizon */
    EQ(nnc_sched_lr(&s, 250, 0), (float)(0.001 + 0.099 * 0.5 * (1 + cos(M_PI / 4))));
    for (long t = 1; t <= 1000; t++) cr_assert_leq(nnc_sched_lr(&s, t, 0), nnc_sched_lr(&s, t - 1, 0));
}

Test(optim_sched, warmup_linear_and_continuous)
{
    nnc_sched s = nnc_sched_default();
    s.kind = NNC_SCHED_COSINE;
    s.base_lr = 0.4f;
    s.total_steps = 10000;
    s.warmup_steps = 100;
    EQ(nnc_sched_lr(&s, 0, 0), (float)(0.4 * 0.5 * (1 + cos(0.0)) / 100));
    EQ(nnc_sched_lr(&s, 49, 0), (float)(0.2 * (1 + cos(M_PI * 49 / 10000)) * 50 / 100));
    /* last warm-up step reaches the schedule itself; the next step continues it smoothly */
    float end = nnc_sched_lr(&s, 99, 0), next = nnc_sched_lr(&s, 100, 0);
    EQ(end, (float)(0.2 * (1 + cos(M_PI * 99 / 10000))));
    cr_assert_leq(fabsf(next - end), 1e-5f, "warm-up end %g vs next %g", (double)end, (double)next);
    for (long t = 1; t < 100; t++) cr_assert_gt(nnc_sched_lr(&s, t, 0), nnc_sched_lr(&s, t - 1, 0));
    nnc_sched c = nnc_sched_default();
    c.base_lr = 0.1f;
    c.warmup_steps = 5;
    EQ(nnc_sched_lr(&c, 0, 0), 0.02f);
    EQ(nnc_sched_lr(&c, 4, 0), 0.1f);
    EQ(nnc_sched_lr(&c, 5, 0), 0.1f);
}

Test(optim_sched, time_drop_before_after)
{
    nnc_sched s = nnc_sched_default();
    s.kind = NNC_SCHED_TIME_DROP;
    s.base_lr = 0.1f;
    s.gamma = 0.2f;
    s.drop_seconds = 60.0;
    EQ(nnc_sched_lr(&s, 1000, 59.999), 0.1f);
    EQ(nnc_sched_lr(&s, 1000, 60.0), 0.02f);
    EQ(nnc_sched_lr(&s, 0, 3600.0), 0.02f);
    s.drop_seconds = 0; /* disabled */
    EQ(nnc_sched_lr(&s, 10, 1e9), 0.1f);
}

Test(optim_sched, resume_mid_schedule_same_lr)
{
    nnc_sched s = nnc_sched_default();
    s.kind = NNC_SCHED_MULTISTEP;
    s.steps_per_epoch = 50;
    s.warmup_steps = 20;
    cr_assert_eq(nnc_sched_parse_milestones("3,5", &s), NNC_OK);
    float trace[400];
    for (long t = 0; t < 400; t++) trace[t] = nnc_sched_lr(&s, t, 0);
    /* a "resumed" run: a copy of the schedule restored from a checkpoint, evaluated out of order */
    nnc_sched r;
    memcpy(&r, &s, sizeof r);
    for (long t = 399; t >= 173; t--) cr_assert_eq(nnc_sched_lr(&r, t, 0), trace[t], "step %ld", t);
    EQ(trace[149], 0.1f);
    EQ(trace[150], 0.01f);
    EQ(trace[250], 0.001f);
}

Test(optim_sched, parse_kind_and_milestones_errors)
{
    nnc_sched_kind k;
    static const char *names[] = {"constant", "step", "multistep", "cosine", "time-drop"};
    for (int i = 0; i < 5; i++) {
        cr_assert_eq(nnc_sched_parse_kind(names[i], &k), NNC_OK);
        cr_assert_eq((int)k, i);
        cr_assert_str_eq(nnc_sched_kind_name(k), names[i]);
    }
    cr_assert_eq(nnc_sched_parse_kind("cosin", &k), NNC_EINVAL);
    cr_assert(strstr(nnc_error_message(), "'cosin'") && strstr(nnc_error_message(), "time-drop"), "%s",
              nnc_error_message());
    nnc_sched s = nnc_sched_default();
    cr_assert_eq(nnc_sched_parse_milestones("100,x", &s), NNC_EINVAL);
    cr_assert(strstr(nnc_error_message(), "offset 4"), "%s", nnc_error_message());
    cr_assert_eq(nnc_sched_parse_milestones("150,100", &s), NNC_EINVAL);
    cr_assert(strstr(nnc_error_message(), "ascending"), "%s", nnc_error_message());
    cr_assert_eq(nnc_sched_parse_milestones("1,2,3,4,5,6,7,8,9", &s), NNC_EINVAL);
    cr_assert_eq(nnc_sched_parse_milestones("10;20", &s), NNC_EINVAL);
    cr_assert(strstr(nnc_error_message(), "expected ','"), "%s", nnc_error_message());
    cr_assert_eq(s.nmilestones, 0, "failed parses leave the schedule unchanged");
}

Test(optim_sched, check_names_the_field)
{
    nnc_sched s = nnc_sched_default();
    s.kind = NNC_SCHED_COSINE;
    cr_assert_eq(nnc_sched_check(&s), NNC_EINVAL);
    cr_assert(strstr(nnc_error_message(), "total steps"), "%s", nnc_error_message());
    s = nnc_sched_default();
    s.kind = NNC_SCHED_MULTISTEP;
    cr_assert_eq(nnc_sched_check(&s), NNC_EINVAL);
    cr_assert(strstr(nnc_error_message(), "milestones"), "%s", nnc_error_message());
    s = nnc_sched_default();
    s.gamma = 0;
    cr_assert_eq(nnc_sched_check(&s), NNC_EINVAL);
    cr_assert(strstr(nnc_error_message(), "gamma"), "%s", nnc_error_message());
    s = nnc_sched_default();
    s.base_lr = -1;
    cr_assert_eq(nnc_sched_check(&s), NNC_EINVAL);
    s = nnc_sched_default();
    s.kind = NNC_SCHED_STEP;
    s.step_epochs = 0;
    cr_assert_eq(nnc_sched_check(&s), NNC_EINVAL);
    cr_assert(strstr(nnc_error_message(), "step epochs"), "%s", nnc_error_message());
}
