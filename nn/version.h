/* nn/version.h - the version of nnc.
 *
 * NNC_VERSION is the version of the headers a program was compiled against; nnc_version()
 * returns the version of the library it runs with (they differ when a program built against
 * one release loads another libnnc.so). Versions follow semantic versioning: the shared
 * library's soname carries the major number.
 */
#ifndef NNC_VERSION_H
#define NNC_VERSION_H

#define NNC_VERSION_MAJOR 0
#define NNC_VERSION_MINOR 9
#define NNC_VERSION_PATCH 0
#define NNC_VERSION "0.9.0"
/* One number for comparisons: 10000 * major + 100 * minor + patch. */
#define NNC_VERSION_NUMBER (NNC_VERSION_MAJOR * 10000 + NNC_VERSION_MINOR * 100 + NNC_VERSION_PATCH)

/* The library's version string ("0.9.0"). Thread-safe. */
const char *nnc_version(void);

#endif
