/* tools/ckpt_model.h - the model stored in a checkpoint, for `nnc eval` and `nnc predict`. */
#ifndef NNC_TOOLS_CKPT_MODEL_H
#define NNC_TOOLS_CKPT_MODEL_H

#include "models/models.h"
#include "nn/checkpoint.h"
#include "tools/cli.h"

/* Load path (a run folder means its best.ckpt, else last.ckpt), build the model named by its architecture string (must equal want_model when that
 * is non-NULL) and fill its parameters and buffers. Prints the problem and returns an exit code
 * (2 for a bad/mismatched file) or 0 with *ck and *m owned by the caller. */
/* A run folder stands for its best.ckpt (else last.ckpt): the file to open (path or buf; NULL
 * when the folder's path does not fit buf). */
const char *cli_resolve_ckpt(const char *path, char *buf, size_t n);
int cli_model_from_ckpt(const char *path, const char *want_model, nnc_ckpt **ck, nnc_model **m);

#endif
