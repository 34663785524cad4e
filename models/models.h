/* models/models.h - code-defined model builders and the name registry.
 *
 * A model is a parameter table (nn/params.h: params, grads, BN running-stat buffers in flat
 * arenas) plus a flat list of layer descriptors whose forward records ops on a step graph.
 * Builders are registered by name: resnet20/32/44/56/110 (CIFAR ResNets, option-A shortcuts)
 * and resnet8 (n = 1, for fast tests), vgg11/13/16/19 (with BatchNorm, CIFAR classifier), and
 * "tiny" (conv-BN-ReLU-maxpool-linear, for fast tests) and "tiny-nobn" (tiny without BN, for
 * exact data-parallel parity tests). Input channels, image size and class
 * count are configurable. Definitions, parameter names/order and initialisation match the
 * PyTorch side of `make bench`, tools/torch_bench.py (see models/builders.c):
 *   ResNet: kaiming_normal_ defaults (fan_in, gain sqrt 2) for conv and linear weights, linear
 *   bias U(+-1/sqrt(fan_in)); VGG: PyTorch default init, U(+-1/sqrt(fan_in)) for weights and
 *   biases; BN gamma 1, beta 0, running mean 0, running var 1. BN gamma/beta are flagged
 *   NNC_PARAM_BN|NNC_PARAM_NO_DECAY, biases NNC_PARAM_NO_DECAY, running stats NNC_PARAM_BUFFER.
 * Image sizes other than 32: ResNets work at any size >= 8 (global average pool). VGG leaves
 * out a max-pool whose input is already 1x1 and adds a global average pool before the
 * classifier if the features end larger than 1x1 (28x28: pools to 14, 7, 3, 1).
 *
 * Thread-safety: a model has one writer at a time. Clones (replicas) are independent and may
 * run forward/backward concurrently on different graphs.
 */
#ifndef NNC_MODELS_H
#define NNC_MODELS_H

#include <stddef.h>
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

/* Build model `name` with freshly initialised parameters drawn from (seed). cfg NULL means
 * the defaults. Unknown name: NNC_EINVAL with the list of known names; bad config (channels,
 * image size or classes out of range, image too small for the net): NNC_EINVAL naming it. */
int nnc_model_new(const char *name, const nnc_model_config *cfg, uint64_t seed, nnc_model **out);
void nnc_model_free(nnc_model *m);
/* Same architecture, copied parameters and buffers (a replica). */
int nnc_model_clone(const nnc_model *m, nnc_model **out);

/* Forward pass of a batch x (N, C, H, W) -> logits (N, classes); x must match the config
 * (asserted). training selects batch statistics + running-stat updates for BN (momentum 0.1,
 * eps 1e-5) and active dropout (rng used only by dropout; required when a training model has it).
 * Training BN needs N*H*W > 1 at every BN layer (asserted, as PyTorch errors): a batch of 1 is
 * fine at 32x32 but not for VGG at 28x28, whose last convolutions run at 1x1. */
nnc_tensor *nnc_model_forward(nnc_model *m, nnc_graph *g, nnc_tensor *x, int training, nnc_rng *rng);

/* Inference forward (eval, predict and `nnc bench` run it): the eval-mode forward of x
 * (N, C, H, W) -> logits (N, classes) with every batch norm that follows a convolution folded
 * into the convolution's weights and bias, the bias, residual add and ReLU applied in the
 * convolution's output pass, and the batch run in slices that stay in the L2 cache
 * (models/infer.c). Nothing is recorded on g (its grad mode is left as it was). The fold is
 * rebuilt from the current parameters and running statistics on every call, so it is never
 * stale. Equals nnc_model_forward(m, g, x, 0, NULL) up to float rounding, and is bitwise the
 * same for any kernel thread count. */
nnc_tensor *nnc_model_forward_infer(nnc_model *m, nnc_graph *g, nnc_tensor *x);

nnc_params *nnc_model_params(nnc_model *m);
const nnc_params *nnc_model_params_const(const nnc_model *m);
const char *nnc_model_name(const nnc_model *m);
nnc_model_config nnc_model_get_config(const nnc_model *m);
/* Architecture string stored in checkpoints: "<name>/c<in>/s<size>/k<classes>". */
const char *nnc_model_arch(const nnc_model *m);

/* Human-readable layer summary: one line per layer (name, output shape, params, MACs).
 * kind is conv2d, batchnorm2d, relu, maxpool2d, global_avgpool, linear, dropout, add
 * (identity residual) or add+shortcut_a. MACs count conv and linear layers, as torch_bench.py. */
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

/* Registry: number of registered names, and name i (NULL when out of range). */
int nnc_model_num_registered(void);
const char *nnc_model_registered_name(int i);
/* 1 when name is a registered model (cheap: no allocation; for checking --model before loading
 * data), else 0. */
int nnc_model_exists(const char *name);
/* The registered name closest to an unknown name (a likely typo), or NULL (also for known names). */
const char *nnc_model_suggest(const char *name);
/* The registered names, comma separated, into buf (truncated to n); returns the full length. */
int nnc_model_list(char *buf, size_t n);

#endif
