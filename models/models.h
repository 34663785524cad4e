/* models/models.h - code-defined model builders and the name registry.
 *
 * A model is a parameter table (nn/params.h: params, grads, BN running-stat buffers in flat
 * arenas) plus a forward function that records ops on a step graph. Builders are registered
 * by name: resnet20/32/44/56/110 (CIFAR ResNets, option-A shortcuts), vgg11/13/16/19 (with
 * BatchNorm, CIFAR classifier), and small test nets. Input channels, image size and class
 * count are configurable. Initialisation follows the reference definitions: Kaiming normal
 * (fan_out, ReLU) for convolutions, BN gamma 1 beta 0, PyTorch's default uniform for linear.
 *
 * Thread-safety: a model has one writer at a time. Clones (replicas) are independent and may
 * run forward/backward concurrently on different graphs.
 */
#ifndef NNC_MODELS_H
#define NNC_MODELS_H

#include <stdint.h>

#include "nn/ops.h"
#include "nn/params.h"

typedef struct nnc_model_config {
    int in_channels;  /* default 3 */
    int image_size;   /* H = W, default 32 */
    int num_classes;  /* default 10 */
} nnc_model_config;

nnc_model_config nnc_model_config_default(void);

typedef struct nnc_model nnc_model;

/* Build model `name` with freshly initialised parameters drawn from (seed). Unknown name:
 * NNC_EINVAL with the list of known names; bad config (image too small for the net): NNC_EINVAL. */
int nnc_model_new(const char *name, const nnc_model_config *cfg, uint64_t seed, nnc_model **out);
void nnc_model_free(nnc_model *m);
/* Same architecture, copied parameters and buffers (a replica). */
int nnc_model_clone(const nnc_model *m, nnc_model **out);

/* Forward pass of a batch x (N, C, H, W) -> logits (N, classes). training selects batch
 * statistics + running-stat updates for BN and active dropout (rng used only by dropout). */
nnc_tensor *nnc_model_forward(nnc_model *m, nnc_graph *g, nnc_tensor *x, int training, nnc_rng *rng);

nnc_params *nnc_model_params(nnc_model *m);
const nnc_params *nnc_model_params_const(const nnc_model *m);
const char *nnc_model_name(const nnc_model *m);
nnc_model_config nnc_model_get_config(const nnc_model *m);
/* Architecture string stored in checkpoints: "<name>/c<in>/s<size>/k<classes>". */
const char *nnc_model_arch(const nnc_model *m);

/* Human-readable layer summary: one line per layer (name, output shape, params, MACs). */
typedef struct nnc_model_layer_info {
    char name[64];
    char kind[32];
    int out_shape[3];   /* C, H, W for one image */
    long params;
    long long macs;     /* forward multiply-accumulates per image */
} nnc_model_layer_info;
/* Fills up to cap entries, returns the number of layers (call with cap 0 to count). */
int nnc_model_layers(const nnc_model *m, nnc_model_layer_info *out, int cap);
long long nnc_model_macs(const nnc_model *m);

/* Registry. */
int nnc_model_num_registered(void);
const char *nnc_model_registered_name(int i);

#endif
