/* models/layers.h - internal: the flat layer-descriptor list behind every model, and the
 * builder that appends to it while tracking the activation shape.
 *
 * A model's forward is a loop over descriptors (models.c), so a later pass may replace a
 * conv/bn/relu run with a fused op without changing any builder or caller. Builders
 * (builders.c) only call nnc__b_* below; parameters are added to the table in the order of
 * PyTorch's model.parameters() with PyTorch's state_dict names ("layers.3.conv1.weight").
 *
 * Thread-safety: building is single-threaded; descriptors are read-only afterwards.
 */
#ifndef NNC_MODELS_LAYERS_H
#define NNC_MODELS_LAYERS_H

#include "models/models.h"

typedef enum nnc__layer_kind {
    NNC__L_CONV,     /* conv2d k x k, stride, pad; p[0] weight, p[1] bias or -1 */
    NNC__L_BN,       /* batchnorm2d; p[0] gamma, p[1] beta, p[2] running mean, p[3] running var */
    NNC__L_RELU,
    NNC__L_MAXPOOL,  /* k x k, stride */
    NNC__L_GAP,      /* global average pool -> (N, C) */
    NNC__L_LINEAR,   /* p[0] weight (out, in), p[1] bias or -1 */
    NNC__L_DROPOUT,  /* drop probability pdrop */
    NNC__L_SAVE,     /* remember the current activation as the residual input */
    NNC__L_RESIDUAL  /* x + shortcut(saved): identity, or option A to out_c channels at stride */
} nnc__layer_kind;

/* How a layer's parameters are initialised (the reference definitions differ per family). */
typedef enum nnc__init {
    NNC__INIT_KAIMING_FAN_IN, /* weight N(0, 2/fan_in) (torch kaiming_normal_ defaults); bias U(+-1/sqrt(fan_in)) */
    NNC__INIT_TORCH_DEFAULT   /* weight and bias U(+-1/sqrt(fan_in)) (torch's reset_parameters) */
} nnc__init;

typedef struct nnc__layer {
    nnc__layer_kind kind;
    nnc__init init;
    char name[48];
    int p[4];
    int k, stride, pad, out_c;
    float pdrop;
    int in_shape[3], out_shape[3]; /* C, H, W for one image (linear/gap: C = features, H = W = 1);
                                    * RESIDUAL: in_shape is the saved block input's */
    long params;
    long long macs;
} nnc__layer;

struct nnc_model {
    char name[32];
    char arch[96];
    nnc_model_config cfg;
    nnc_params *params;
    nnc__layer *layers;
    int nlayers, cap;
};

/* Builder state: the model under construction, the current activation shape, first error. */
typedef struct nnc__builder {
    nnc_model *m;
    int c, h, w;
    int sc, sh, sw; /* shape at the last SAVE */
    int status;
    nnc__init init;
} nnc__builder;

void nnc__b_conv(nnc__builder *b, const char *name, int out_c, int k, int stride, int pad, int bias);
void nnc__b_bn(nnc__builder *b, const char *name);
void nnc__b_relu(nnc__builder *b, const char *name);
void nnc__b_maxpool(nnc__builder *b, const char *name, int k, int stride);
void nnc__b_gap(nnc__builder *b, const char *name);
void nnc__b_linear(nnc__builder *b, const char *name, int out, int bias);
void nnc__b_dropout(nnc__builder *b, const char *name, float p);
void nnc__b_save(nnc__builder *b, const char *name);
void nnc__b_residual(nnc__builder *b, const char *name, int stride);

/* A builder appends the layers of one architecture; arg is the registry entry's argument
 * (ResNet depth n, VGG config index). Errors go to b->status. */
typedef void (*nnc__build_fn)(nnc__builder *b, int arg);

typedef struct nnc__model_def {
    const char *name;
    nnc__build_fn build;
    int arg;
    int min_size; /* smallest image_size accepted */
} nnc__model_def;

/* Eval-mode slicing (models.c): batches run in slices of NNC__INFER_SLICE images up to layer
 * nnc__model_infer_split(m) (0: no slicing), never inside a CONV..BN..RESIDUAL..RELU run or a
 * SAVE..RESIDUAL window; the rest runs on the whole batch. */
#define NNC__INFER_SLICE 8
int nnc__model_infer_split(const nnc_model *m);

/* builders.c: the registry table. */
extern const nnc__model_def nnc__model_defs[];
extern const int nnc__num_model_defs;

#endif
