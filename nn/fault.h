/* nn/fault.h - test-only fault injection (compiled with -DNNC_TESTING).
 *
 * NNC_FAULT="name:arg[,name:arg...]" in the environment arms named fault points, the way
 * PyTorch simulates collective errors. Without NNC_TESTING every query returns "not armed" and
 * the points compile to nothing. Known points:
 *   backward_nan:OP          the first backward of op OP writes NaN into its input gradients
 *   ckpt_slow_write:MS       nnc_ckpt_save sleeps MS ms after each 64 KiB chunk it writes
 *   (more are registered by the modules that check them; see nnc__fault_arg users)
 */
#ifndef NNC_FAULT_H
#define NNC_FAULT_H

struct nnc_graph;
struct nnc_node;

/* If fault `name` is armed, copy its argument to arg (may be NULL) and return 1. */
int nnc__fault_arg(const char *name, char *arg, int n);
/* Re-read NNC_FAULT (tests that setenv() call this). */
void nnc__fault_reload(void);
void nnc__fault_backward(struct nnc_graph *g, struct nnc_node *n, int index);

#endif
