/* nn/fault.c - test-only fault injection points (see nn/fault.h). */
#include "nn/fault.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/tensor.h"

#ifdef NNC_TESTING
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static char spec[512];
static int loaded;

/* Read NNC_FAULT into spec; caller holds mu. */
static void load_locked(void)
{
    const char *e = getenv("NNC_FAULT");
    snprintf(spec, sizeof spec, "%s", e ? e : "");
    loaded = 1;
}

void nnc__fault_reload(void)
{
    pthread_mutex_lock(&mu);
    load_locked();
    pthread_mutex_unlock(&mu);
}

int nnc__fault_arg(const char *name, char *arg, int n)
{
    size_t len = strlen(name);
    int found = 0;
    pthread_mutex_lock(&mu);
    if (!loaded) load_locked(); /* first use may come from several worker threads at once */
    for (const char *p = spec; *p;) {
        const char *end = strchr(p, ',');
        size_t item = end ? (size_t)(end - p) : strlen(p);
        if (item >= len && strncmp(p, name, len) == 0 && (item == len || p[len] == ':')) {
            found = 1;
            if (arg && n > 0) {
                size_t a = item > len ? item - len - 1 : 0;
                if (a >= (size_t)n) a = (size_t)n - 1;
                memcpy(arg, p + len + (item > len), a);
                arg[a] = 0;
            }
            break;
        }
        p += item + (end != NULL);
    }
    pthread_mutex_unlock(&mu);
    return found;
}

void nnc__fault_backward(nnc_graph *g, nnc_node *n, int index)
{
    (void)g;
    (void)index;
    char op[64];
    if (!nnc__fault_arg("backward_nan", op, sizeof op) || strcmp(op, n->op) != 0) return;
    for (int k = 0; k < n->nin; k++)
        if (n->in[k] && n->in[k]->grad) n->in[k]->grad[0] = NAN;
}
#else
void nnc__fault_reload(void) {}
int nnc__fault_arg(const char *name, char *arg, int n)
{
    (void)name;
    (void)arg;
    (void)n;
    return 0;
}
void nnc__fault_backward(nnc_graph *g, nnc_node *n, int index)
{
    (void)g;
    (void)n;
    (void)index;
}
#endif
