/* tools/cli.h - shared pieces of the nnc command line: exit codes, flag tables, progress output,
 * the run folder (config.json, metrics.csv, summary.json, plot.svg).
 *
 * tools/ is the only place that chooses exit codes and prints; it is a thin layer over the
 * library API in nn/nnc.h. Single-threaded except where noted.
 */
#ifndef NNC_TOOLS_CLI_H
#define NNC_TOOLS_CLI_H

#include <stdarg.h>
#include <stdio.h>

/* Exit codes (documented in the README). */
enum {
    EXIT_OK = 0,
    EXIT_RUNTIME = 1,   /* runtime failure (I/O while training, thread failure, timeout) */
    EXIT_USAGE = 2,     /* bad flag/value, bad or missing data/checkpoint file */
    EXIT_DIVERGED = 3,  /* numerical divergence */
    EXIT_SIGINT = 130,
    EXIT_SIGTERM = 143
};


/* Map a library status to the documented exit code. */
int cli_exit_code(int status);

/* ---- flags ---- */
typedef enum { FLAG_INT, FLAG_LONG, FLAG_FLOAT, FLAG_DOUBLE, FLAG_STR, FLAG_BOOL } flag_type;

typedef struct flag_spec {
    const char *name;   /* without the leading "--" */
    flag_type type;
    void *dest;         /* int*, long*, float*, double*, const char**, int* (bool) */
    const char *help;
    int set;            /* filled by the parser: 1 from the command line, 2 from a config file */
} flag_spec;

typedef struct flag_table {
    const char *command;   /* "train" */
    const char *usage;     /* "nnc train DATASET [flags]" */
    const char *summary;   /* one paragraph */
    flag_spec *flags;
    int nflags;
    const char **positional; /* filled: pointers into argv */
    int npositional, max_positional;
} flag_table;

/* Parse argv (after the subcommand). Returns 0 on success, 1 if --help was printed (caller
 * exits 0), or EXIT_USAGE after printing a message (unknown flag with "did you mean", bad value,
 * too many positionals). --config FILE (flat JSON or key=value lines) is applied first; flags
 * on the command line override it. */
int flags_parse(flag_table *t, int argc, char **argv);
void flags_print_help(const flag_table *t, FILE *f);
/* Write the effective configuration as flat JSON (reloadable with --config). */
void flags_write_json(const flag_table *t, FILE *f);
flag_spec *flags_find(flag_table *t, const char *name);

/* ---- messages ---- */
/* "nnc: <message>" on stderr. */
void cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* --precision VALUE (fp32 or bf16, nn/precision.h): sets the calling thread's (its current
 * team's); returns 0, or prints and returns EXIT_USAGE (an unknown name, or bf16 on a CPU without AVX512_BF16)
 * (tools/cmd_bench.c). */
int cli_set_precision(const char *value);

/* messages */
/* The candidate closest to name by edit distance (close enough to be a likely typo), or NULL:
 * for "did you mean" in messages. */
const char *cli_closest(const char *name, const char *const *cands, int n);
/* Valid range of an integer flag, checked after parsing; expected reads as in
 * "--batch: expected <expected>, found '0'". */
typedef struct flag_range {
    const char *name;
    long long min, max;
    const char *expected;
} flag_range;
/* Check every listed FLAG_INT/FLAG_LONG flag of t; prints the first violation (flag, expected,
 * the value found) and returns EXIT_USAGE, else 0. */
int flags_check_ranges(const flag_table *t, const flag_range *r, int n);
/* The shortest %g text that reads back (strtof / strtod) as exactly v. */
const char *cli_format_float(float v, char *buf, size_t n);
const char *cli_format_double(double v, char *buf, size_t n);
/* `nnc --version`: version and build facts on f. */
void cli_print_version(FILE *f);
/* end messages */

/* ---- progress ---- */
typedef struct progress {
    int tty;            /* stdout is a terminal: redraw one line with \r; else plain lines */
    double start;       /* monotonic seconds */
    double last_print;
    long every;         /* plain mode: one line every `every` steps */
    int drawn;          /* tty mode: a bar is on the current line */
    int cols;           /* lines stay within cols - 1 columns (terminal width, COLUMNS, or 80) */
    FILE *log;          /* RUN/train.log (appended) once opened, else NULL; closed by progress_done */
    long log_step;      /* step of the last progress line in the log */
} progress;

double cli_now(void); /* monotonic seconds */
void progress_init(progress *p, long every);
/* step/total (total <= 0 = unknown), loss (NAN = unknown), accuracy in [0,1] (< 0 = unknown),
 * images/s, ETA seconds (< 0 = unknown). */
void progress_update(progress *p, const char *label, long step, long total, double loss, double acc,
                     double img_per_s, double eta_s);
void progress_done(progress *p);
/* Erase the bar (tty) so that a normal line can be printed; the next update redraws it. */
void progress_clear(progress *p);
/* nnc_fetch_config progress callback (ud = progress*): MB done/total, rate, ETA. */
void cli_fetch_progress(double done_bytes, double total_bytes, void *ud);

/* progress and plots */
/* A field of a status line: `text`, optionally a shorter `brief` form; higher `prio` is kept
 * longer. text NULL = absent. */
typedef struct nnc_field {
    const char *text, *brief;
    int prio;
} nnc_field;
struct nnc_round_info;
/* Join the fields with single spaces into out (n bytes) within width - 1 columns: abbreviate the
 * least important fields first, then drop them; the last field left is cut. Returns the length. */
size_t nnc_fit_fields(char *out, size_t n, int width, const nnc_field *f, int nf);
/* The progress line (bar: draw a [###...] bar when there is room). Returns the length. */
size_t nnc_format_progress(char *out, size_t n, int width, int bar, const char *label, long step, long total,
                           double loss, double acc, double img_per_s, double eta_s);
/* The terminal's round line: ranges over workers (norm, weight, distance, local steps) and the
 * slowest worker. norm_label: "norm" (GRAWA), "loss" (LSGD) or NULL (no norm). */
size_t nnc_format_round(char *out, size_t n, int width, const struct nnc_round_info *r, const char *norm_label);
/* The full round line, every worker's values, for RUN/train.log. */
void nnc_format_round_full(FILE *f, const struct nnc_round_info *r, const char *norm_label);
/* Columns of the terminal on fd (TIOCGWINSZ), else $COLUMNS, else 80. */
int nnc_term_width(int fd);
/* Install a SIGWINCH handler that only sets a flag; nnc_winch_pending() reads and clears it. */
void nnc_watch_winch(void);
int nnc_winch_pending(void);
/* "mm:ss" or "h:mm:ss"; "--:--" when unknown. */
void nnc_fmt_time(char *buf, size_t n, double s);
/* Ticks at 1-2-5 steps covering [lo, hi] (the first <= lo, the last >= hi), about `target` of
 * them; returns the count (at most cap). */
int nnc_nice_ticks(double lo, double hi, int target, double *ticks, int cap);

/* ---- run folder ---- */
/* mkdir -p; returns 0 or prints and returns EXIT_USAGE. */
int cli_mkdirs(const char *path);
/* Write text to path atomically (temp + fsync + rename). Returns 0 or -1 (errno set). */
int cli_write_atomic(const char *path, const char *text, size_t len);

typedef struct metrics_log {
    FILE *f;
    char path[1024];
} metrics_log;

/* Open run_dir/metrics.csv for appending; writes the header only if the file is new/empty. */
int metrics_open(metrics_log *m, const char *run_dir);
/* kind: "train" | "val" | "round" ...; fields not applicable are NAN (written empty). */
void metrics_row(metrics_log *m, const char *kind, long step, double epoch, double seconds,
                 double loss, double acc, double lr, double img_per_s, const char *extra);
void metrics_close(metrics_log *m);

/* Render run_dir/metrics.csv into run_dir/plot.svg (loss and accuracy against steps, accuracy
 * against training seconds).
 * Returns 0 or -1. */
int plot_metrics_svg(const char *run_dir);

/* A tiny JSON object writer for summary.json. */
typedef struct json_out {
    FILE *f;
    int n;
} json_out;
void json_begin(json_out *j, FILE *f);
void json_num(json_out *j, const char *key, double v);
void json_int(json_out *j, const char *key, long long v);
void json_str(json_out *j, const char *key, const char *v);
void json_raw(json_out *j, const char *key, const char *raw);
void json_end(json_out *j);

/* ---- reading back the small JSON files the CLI writes (summary.json, dataset.json) ---- */
/* Value of "key": number -> *out (returns 0), or -1 when absent / not a number. */
int jr_num(const char *text, const char *key, double *out);
/* Number array "key": [a, b, ...] -> up to cap values; returns the count or -1. */
int jr_nums(const char *text, const char *key, double *out, int cap);
/* String "key": "v" -> buf (unescaped, truncated to n); returns 0 or -1. */
int jr_str(const char *text, const char *key, char *buf, size_t n);
/* String array "key": [...] -> malloc'd strings (free each with free()); returns count or -1. */
int jr_strs(const char *text, const char *key, char **out, int cap);
/* Whole regular file of at most CLI_READ_MAX bytes into a malloc'd NUL-terminated buffer (NULL
 * with errno set on failure: EINVAL not a regular file, EFBIG too large). */
#define CLI_READ_MAX ((size_t)256 << 20)
char *cli_read_file(const char *path, size_t *len);

/* ---- shared helpers ---- */
/* Exit code for a failure while loading user-supplied data, checkpoints or configs: file and
 * format problems are usage/data errors (2); out-of-memory and network failures are 1. */
int cli_load_exit_code(int status);
/* Parse an architecture string "<name>/c<in>/s<size>/k<classes>" (h<size> accepted too). */
int cli_parse_arch(const char *arch, char *name, size_t n, int *in_channels, int *image_size,
                   int *num_classes);

/* ---- run folders (docs/run-folders.md) ---- */
/* Longest accepted run folder / compare --out path: room for "/epoch-EEEE.ckpt" and a temp
 * suffix inside the 1024-byte path buffers. */
#define RUN_DIR_MAX 900
/* SIGHUP stops a training like SIGTERM, with a checkpoint: exit 128 + 1. */
enum { EXIT_SIGHUP = 129 };
/* run_dir/name into buf; EXIT_USAGE (printed) when it does not fit. */
int run_path(char *buf, size_t n, const char *run_dir, const char *name);
/* 1 when run_dir holds a run (config.json, metrics.csv or a *.ckpt; the first found -> what). */
int run_dir_used(const char *run_dir, char *what, size_t n);
/* --overwrite: remove nnc's own files (config.json, dataset.json, metrics.csv, plot.svg,
 * summary.json, last.ckpt, best.ckpt, epoch-EEEE.ckpt and their temp files); nothing else. */
int run_dir_clear(const char *run_dir);
/* run_dir/.lock: probe (0 when free or absent; EXIT_USAGE, printed, "in use by process N"),
 * acquire (flock LOCK_EX|LOCK_NB, pid written inside; *fd to release), release. */
int run_lock_probe(const char *run_dir);
int run_lock_acquire(const char *run_dir, int *fd);
void run_lock_release(int fd);
/* Keep metrics.csv's header and the rows with step <= max_step (atomic rewrite when any row
 * goes). Returns the rows dropped, or -EXIT_* (printed). */
long metrics_truncate(const char *run_dir, long max_step);

/* ---- subcommands (tools/cmd_<name>.c); argv[0] is the subcommand name ---- */
int cmd_train(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_predict(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_data(int argc, char **argv);
int cmd_compare(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_flatness(int argc, char **argv);
/* nnc bench --workers (tools/bench_workers.c): M workers of tpw threads (0 = cores / M) vs one
 * replica of `threads` threads through nnc_train; scaling: also a table over M = 1, 2, 4, ... up
 * to the core count (cores / M threads each). */
typedef struct bench_workers_opts {
    const char *model, *algo;
    int workers, threads, threads_per_worker, placement, batch, json, scaling;
    double seconds;
    long seed;
} bench_workers_opts;
int bench_workers(const bench_workers_opts *o);

#endif
