/* models/builders.c - the architectures and the name registry.
 *
 * Definitions match tools/torch_bench.py (the PyTorch side of `make bench`) and the float64
 * reference generator tests/fixtures/gen_models_ref.py layer for layer, with PyTorch's parameter
 * names and order:
 *  - resnet{6n+2}: conv3x3(in->16) BN ReLU; 3 stages of n BasicBlocks (16/32/64 channels,
 *    stride 2 in the first block of stages 2 and 3): conv3x3-BN-ReLU-conv3x3-BN, plus the
 *    option-A shortcut (subsample + zero channel padding) when the shape changes, then ReLU;
 *    global average pool; linear with bias. No conv bias. Init: kaiming_normal_ defaults
 *    (fan_in, gain sqrt 2) for conv and linear weights, linear bias PyTorch default.
 *  - vgg11/13/16/19 (BatchNorm): conv3x3 with bias + BN + ReLU, max-pool 2x2 at each "M";
 *    classifier Dropout-Linear(512,512)-ReLU-Dropout-Linear(512,512)-ReLU-Linear(512,classes).
 *    Init: PyTorch defaults (U(+-1/sqrt(fan_in)) weights and biases), as the reference.
 *    Other image sizes than 32: a max-pool whose input is already 1x1 is left out, and if the
 *    features end larger than 1x1 a global average pool (adaptive_avg_pool2d(1)) precedes the
 *    classifier. At 32x32 neither happens, so the network is exactly the reference; at 28x28
 *    (Fashion-MNIST) the pools give 14, 7, 3, 1 and the fifth is left out.
 *  - tiny: conv3x3(in->8) BN ReLU maxpool2 linear(8*(S/2)^2 -> classes), for fast tests.
 *  - tiny-nobn: tiny without the BN (conv with bias), for tests that need per-sample
 *    independence (DP with M x b images equals one replica with M*b images).
 *  - tiny-linear: one linear layer on the flattened image (softmax regression), for tests that
 *    need the loss Hessian in closed form.
 */
#include <stdio.h>

#include "models/layers.h"

static void resnet(nnc__builder *b, int n)
{
    b->init = NNC__INIT_KAIMING_FAN_IN;
    nnc__b_conv(b, "conv1", 16, 3, 1, 1, 0);
    nnc__b_bn(b, "bn1");
    nnc__b_relu(b, "relu");
    static const int widths[3] = {16, 32, 64};
    int block = 0;
    char nm[48];
    for (int s = 0; s < 3; s++) {
        for (int i = 0; i < n; i++, block++) {
            int stride = (s > 0 && i == 0) ? 2 : 1;
#define NM(suffix) (snprintf(nm, sizeof nm, "layers.%d.%s", block, suffix), nm)
            nnc__b_save(b, NM("in"));
            nnc__b_conv(b, NM("conv1"), widths[s], 3, stride, 1, 0);
            nnc__b_bn(b, NM("bn1"));
            nnc__b_relu(b, NM("relu1"));
            nnc__b_conv(b, NM("conv2"), widths[s], 3, 1, 1, 0);
            nnc__b_bn(b, NM("bn2"));
            nnc__b_residual(b, NM("shortcut"), stride);
            nnc__b_relu(b, NM("relu2"));
#undef NM
        }
    }
    nnc__b_gap(b, "avgpool");
    nnc__b_linear(b, "fc", b->m->cfg.num_classes, 1);
}

#define M_ (-1)
static const int vgg_cfgs[4][22] = {
    {64, M_, 128, M_, 256, 256, M_, 512, 512, M_, 512, 512, M_, 0},
    {64, 64, M_, 128, 128, M_, 256, 256, M_, 512, 512, M_, 512, 512, M_, 0},
    {64, 64, M_, 128, 128, M_, 256, 256, 256, M_, 512, 512, 512, M_, 512, 512, 512, M_, 0},
    {64, 64, M_, 128, 128, M_, 256, 256, 256, 256, M_, 512, 512, 512, 512, M_, 512, 512, 512, 512, M_, 0},
};

static void vgg(nnc__builder *b, int which)
{
    b->init = NNC__INIT_TORCH_DEFAULT;
    char nm[48];
    int idx = 0; /* index in torch's features Sequential */
    for (const int *v = vgg_cfgs[which]; *v; v++) {
        if (*v == M_) {
            if (b->h > 1 || b->w > 1) {
                snprintf(nm, sizeof nm, "features.%d", idx);
                nnc__b_maxpool(b, nm, 2, 2);
            }
            idx++;
            continue;
        }
        snprintf(nm, sizeof nm, "features.%d", idx);
        nnc__b_conv(b, nm, *v, 3, 1, 1, 1);
        snprintf(nm, sizeof nm, "features.%d", idx + 1);
        nnc__b_bn(b, nm);
        snprintf(nm, sizeof nm, "features.%d", idx + 2);
        nnc__b_relu(b, nm);
        idx += 3;
    }
    if (b->h > 1 || b->w > 1) nnc__b_gap(b, "avgpool");
    nnc__b_dropout(b, "classifier.0", 0.5f);
    nnc__b_linear(b, "classifier.1", 512, 1);
    nnc__b_relu(b, "classifier.2");
    nnc__b_dropout(b, "classifier.3", 0.5f);
    nnc__b_linear(b, "classifier.4", 512, 1);
    nnc__b_relu(b, "classifier.5");
    nnc__b_linear(b, "classifier.6", b->m->cfg.num_classes, 1);
}

static void tiny(nnc__builder *b, int arg)
{
    b->init = NNC__INIT_KAIMING_FAN_IN;
    nnc__b_conv(b, "conv", 8, 3, 1, 1, 0);
    nnc__b_bn(b, "bn");
    nnc__b_relu(b, "relu");
    nnc__b_maxpool(b, "pool", 2, 2);
    nnc__b_linear(b, "fc", b->m->cfg.num_classes, 1);
}

static void tiny_nobn(nnc__builder *b, int arg)
{
    (void)arg;
    b->init = NNC__INIT_KAIMING_FAN_IN;
    nnc__b_conv(b, "conv", 8, 3, 1, 1, 1);
    nnc__b_relu(b, "relu");
    nnc__b_maxpool(b, "pool", 2, 2);
    nnc__b_linear(b, "fc", b->m->cfg.num_classes, 1);
}

static void tiny_linear(nnc__builder *b, int arg)
{
    (void)arg;
    b->init = NNC__INIT_TORCH_DEFAULT;
    nnc__b_linear(b, "fc", b->m->cfg.num_classes, 1);
}

const nnc__model_def nnc__model_defs[] = {
    {"resnet20", resnet, 3, 8},  {"resnet32", resnet, 5, 8}, {"resnet44", resnet, 7, 8},
    {"resnet56", resnet, 9, 8},  {"resnet110", resnet, 18, 8}, {"resnet8", resnet, 1, 8},
    {"vgg11", vgg, 0, 8},        {"vgg13", vgg, 1, 8},       {"vgg16", vgg, 2, 8},
    {"vgg19", vgg, 3, 8},        {"tiny", tiny, 0, 2},
    {"tiny-nobn", tiny_nobn, 0, 2}, /* BN-free tiny: DP over M workers x b images == one replica x M*b */
    {"tiny-linear", tiny_linear, 0, 1}, /* softmax regression: closed-form Hessian */
};
const int nnc__num_model_defs = (int)(sizeof nnc__model_defs / sizeof nnc__model_defs[0]);
