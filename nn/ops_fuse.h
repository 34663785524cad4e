/* nn/ops_fuse.h - the fused batch-norm plumbing shared by nn/ops_conv.c and nn/ops_norm.c; it
 * lives with the convolution's fusion contract in nn/conv/fuse.h (internal to nn/). */
#ifndef NNC_OPS_FUSE_H
#define NNC_OPS_FUSE_H

#include "nn/conv/fuse.h"

#endif
