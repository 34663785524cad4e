/* nn/checkpoint.h - the nnc checkpoint file: validated, CRC-protected, written atomically.
 *
 * File layout (little-endian):
 *   header   : magic "NNCCKPT1" (8 bytes), u32 version (1), u32 nsections, u32 arch_len,
 *              arch string (arch_len bytes, no NUL), u32 crc32 of everything before it
 *   sections : nsections times { u32 name_len, name, u32 kind (0 = float32 tensor, 1 = bytes),
 *              u32 ndim, i32 shape[ndim], u64 nbytes, u32 crc, data[nbytes] }
 *              crc = crc32 over the section's fields from name_len through nbytes, then its data
 *              (so a flipped bit in a name or shape is caught too). Float tensors have ndim 1..4,
 *              every dimension > 0 and nbytes = 4 * numel; bytes sections have ndim 0. Names are
 *              1..NNC_CKPT_NAME_MAX-1 bytes, unique, without NUL; arch_len is at most 4096.
 *   trailer  : magic "NNCEND\0\0" (8 bytes), then end of file
 * Sections carry model parameters ("param/<name>"), buffers ("buf/<name>"), optimizer state,
 * RNG states, counters and anything else a caller adds; they are found by name.
 *
 * Saving never leaves a partial file under the final name: the writer writes path.tmp.<pid>,
 * fsyncs it, renames it over path and fsyncs the folder. Temp files path.tmp.<pid> whose process
 * no longer exists (a save killed part-way) are removed by the next save to the same path.
 * A write failing because of RLIMIT_FSIZE raises SIGXFSZ, which kills the process unless the
 * program ignores it (the save then fails with EFBIG). Test hook (NNC_TESTING, nn/fault.h):
 * NNC_FAULT=ckpt_slow_write:MS sleeps MS ms after each 64 KiB chunk written.
 *
 * Loading reads the whole file into one buffer and validates magic, version, every size against
 * the bytes that remain, every CRC and the trailer before handing out any data; the first
 * problem becomes an NNC_EFORMAT (or NNC_EIO) message naming the file and, as relevant:
 *   "truncated at offset 61: data of section 'a' needs 128 bytes, 39 left"
 *   "CRC mismatch in section 'param/conv1.weight' at offset 28 (stored ..., computed ...)"
 *   "bad magic: expected NNCCKPT1, found GARBAGE!"; "version 7 not supported (expected 1)"
 *   "shape mismatch for tensor 'param/fc.weight': expected (10,64) found (100,64)"
 *   "missing tensor 'param/fc.bias' (expected shape (10))"; "unexpected tensor 'param/x' ..."
 * Allocation while loading is bounded by a small multiple of the file size, whatever it claims.

 * Thread-safety: an nnc_ckpt belongs to one thread; different ones are independent.
 */
#ifndef NNC_CHECKPOINT_H
#define NNC_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "nn/params.h"

#define NNC_CKPT_VERSION 1
#define NNC_CKPT_NAME_MAX 256 /* section names are shorter than this */

typedef struct nnc_ckpt nnc_ckpt;

/* An empty checkpoint for writing, labelled with an architecture string (e.g. "resnet20/c1/h28/k10"). */
int nnc_ckpt_new(const char *arch, nnc_ckpt **out);
void nnc_ckpt_free(nnc_ckpt *c);
const char *nnc_ckpt_arch(const nnc_ckpt *c);

/* Add sections. The data is referenced, not copied: it must stay valid and unchanged until
 * nnc_ckpt_save() returns. Names must be unique (duplicate = NNC_EINVAL). */
int nnc_ckpt_add_floats(nnc_ckpt *c, const char *name, int ndim, const int *shape, const float *data);
int nnc_ckpt_add_bytes(nnc_ckpt *c, const char *name, const void *data, size_t nbytes);
/* Every entry of p: trained tensors as "<prefix>param/<name>", buffers as "<prefix>buf/<name>". */
int nnc_ckpt_add_params(nnc_ckpt *c, const char *prefix, const nnc_params *p);
/* Floats laid out like p's trained data (optimizer momentum): "<prefix><name>" per trained entry. */
int nnc_ckpt_add_params_like(nnc_ckpt *c, const char *prefix, const nnc_params *p, const float *data);

/* Atomic save (see above). NNC_EIO names the path and strerror on failure; an existing file
 * at path is untouched unless the save succeeds. */
int nnc_ckpt_save(const nnc_ckpt *c, const char *path);

/* Load and fully validate a file. On success *out owns the file's bytes (one allocation). */
int nnc_ckpt_load(const char *path, nnc_ckpt **out);
/* Same, from memory (fuzzing, tests); `label` names the source in messages. */
int nnc_ckpt_load_mem(const void *data, size_t n, const char *label, nnc_ckpt **out);

/* Lookups on a loaded checkpoint. NULL / negative status when missing or of the wrong kind. */
int nnc_ckpt_has(const nnc_ckpt *c, const char *name);
int nnc_ckpt_get_bytes(const nnc_ckpt *c, const char *name, const void **data, size_t *nbytes);
/* Copy a float section into dst, checking its shape equals (ndim, shape). */
int nnc_ckpt_get_floats(const nnc_ckpt *c, const char *name, int ndim, const int *shape, float *dst);
/* Fill p (data + buffers) from "<prefix>param/..." and "<prefix>buf/..." sections. Checks that
 * every entry of p is present with the same shape and that the checkpoint holds no extra
 * tensors under the prefix; on any mismatch p is left unchanged. */
int nnc_ckpt_get_params(const nnc_ckpt *c, const char *prefix, nnc_params *p);
/* Same for optimizer-state-like floats: "<prefix><name>" per trained entry into dst + offset; a
 * non-empty prefix also rejects sections under it that match no trained entry. */
int nnc_ckpt_get_params_like(const nnc_ckpt *c, const char *prefix, const nnc_params *p, float *dst);

/* Loading does not judge values: NaN and Inf round-trip bit for bit. A model for evaluation,
 * prediction or training must be finite, so its loaders call these after the gets above: the
 * first non-finite element becomes NNC_EFORMAT naming the file, the section and the element index
 * ("checkpoint 'x': tensor 'param/fc.weight' element 17 is nan (expected finite values)").
 * nnc_ckpt_check_finite walks p's data and buffers as "<prefix>param/.." and "<prefix>buf/..";
 * _like walks data laid out like p's trained data as "<prefix><name>"; _floats n floats of
 * section `name`. */
int nnc_ckpt_check_finite(const nnc_ckpt *c, const char *prefix, const nnc_params *p);
int nnc_ckpt_check_finite_like(const nnc_ckpt *c, const char *prefix, const nnc_params *p, const float *data);
int nnc_ckpt_check_finite_floats(const nnc_ckpt *c, const char *name, const float *data, size_t n);

/* CRC-32 (zlib polynomial), exposed for tests and other file formats. */
uint32_t nnc_crc32(uint32_t crc, const void *data, size_t n);

#endif
