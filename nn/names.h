/* nn/names.h - "did you mean": the closest of a list of names to a mistyped one.
 *
 * Used for commands, flags, datasets and models alike, so every "did you mean" follows one
 * rule. Internal (nnc__ prefix); pure functions, thread-safe.
 */
#ifndef NNC_NAMES_H
#define NNC_NAMES_H

/* Levenshtein distance of two names (99 when either is longer than 63 characters). */
int nnc__edit_distance(const char *a, const char *b);

/* The candidate closest to `name` (NULL entries skipped), or NULL when none is close: a smaller
 * distance wins, at most 3 edits and fewer than the candidate's length (an unrelated short word
 * is no suggestion); a candidate that contains `name` is taken within 5 edits when nothing closer
 * was found. NULL for an empty name or one that is itself a candidate. */
const char *nnc__closest_name(const char *name, const char *const *cands, int n);

#endif
