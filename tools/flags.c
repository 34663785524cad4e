/* tools/flags.c - flag tables: parsing, --config files, help, "did you mean", JSON dump. */
#include <ctype.h>
#include <errno.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nn/fileio.h"
#include "nn/status.h"
#include "nn/names.h"
#include "tools/cli.h"

void cli_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("nnc: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

flag_spec *flags_find(flag_table *t, const char *name)
{
    for (int i = 0; i < t->nflags; i++)
        if (!strcmp(t->flags[i].name, name)) return &t->flags[i];
    return NULL;
}

const char *cli_closest(const char *name, const char *const *cands, int n)
{
    return nnc__closest_name(name, cands, n);
}

static const char *closest(const flag_table *t, const char *name)
{
    const char *names[128];
    int n = 0;
    for (int i = 0; i < t->nflags && n < 128; i++) names[n++] = t->flags[i].name;
    return cli_closest(name, names, n);
}

static int set_value(flag_spec *f, const char *v, const char *origin)
{
    char *end = NULL;
    errno = 0;
    switch (f->type) {
    case FLAG_INT:
    case FLAG_LONG: {
        long long x = strtoll(v, &end, 10);
        int range_err = errno == ERANGE;
        if (!*v || end == v || *end || (errno && !range_err)) {
            cli_error("%s--%s: expected an integer, found '%s'", origin, f->name, v);
            return EXIT_USAGE;
        }
        long long lo = f->type == FLAG_INT ? INT_MIN : LONG_MIN, hi = f->type == FLAG_INT ? INT_MAX : LONG_MAX;
        if (range_err || x < lo || x > hi) {
            cli_error("%s--%s: expected an integer in %lld..%lld, found '%s' (out of range)", origin, f->name, lo, hi,
                      v);
            return EXIT_USAGE;
        }
        if (f->type == FLAG_INT)
            *(int *)f->dest = (int)x;
        else
            *(long *)f->dest = (long)x;
        break;
    }
    case FLAG_FLOAT:
    case FLAG_DOUBLE: {
        double x = strtod(v, &end);
        if (!*v || end == v || *end) {
            cli_error("%s--%s: expected a number, found '%s'", origin, f->name, v);
            return EXIT_USAGE;
        }
        if (!isfinite(x) || (errno == ERANGE && fabs(x) > 1) || (f->type == FLAG_FLOAT && fabs(x) > FLT_MAX)) {
            cli_error("%s--%s: expected a finite number%s, found '%s'", origin, f->name,
                      f->type == FLAG_FLOAT ? " (at most 3.4e38 in magnitude)" : "", v);
            return EXIT_USAGE;
        }
        if (f->type == FLAG_FLOAT)
            *(float *)f->dest = (float)x;
        else
            *(double *)f->dest = x;
        break;
    }
    case FLAG_STR:
        *(const char **)f->dest = v;
        break;
    case FLAG_BOOL:
        if (!strcmp(v, "1") || !strcmp(v, "true") || !strcmp(v, "yes") || !strcmp(v, "on"))
            *(int *)f->dest = 1;
        else if (!strcmp(v, "0") || !strcmp(v, "false") || !strcmp(v, "no") || !strcmp(v, "off"))
            *(int *)f->dest = 0;
        else {
            cli_error("%s--%s: expected true or false, found '%s'", origin, f->name, v);
            return EXIT_USAGE;
        }
        break;
    }
    return 0;
}

int flags_check_ranges(const flag_table *t, const flag_range *r, int n)
{
    for (int i = 0; i < n; i++) {
        const flag_spec *f = NULL;
        for (int k = 0; k < t->nflags; k++)
            if (!strcmp(t->flags[k].name, r[i].name)) f = &t->flags[k];
        if (!f || (f->type != FLAG_INT && f->type != FLAG_LONG)) continue;
        long long v = f->type == FLAG_INT ? *(const int *)f->dest : *(const long *)f->dest;
        if (v < r[i].min || v > r[i].max) {
            cli_error("--%s: expected %s, found '%lld'", f->name, r[i].expected, v);
            return EXIT_USAGE;
        }
    }
    return 0;
}

/* ---- --config files ---- */

/* Config texts and their values stay reachable for the process lifetime: string flags point
 * into them. */
static char **kept; /* every kept string, so that they stay reachable (no leak reports) */
static size_t nkept, capkept;

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n);
    if (!q) {
        fputs("nnc: out of memory\n", stderr);
        exit(EXIT_RUNTIME);
    }
    return q;
}

/* A kept copy of p[0..n) plus a NUL; p NULL: n + 1 zero bytes. */
static char *keep_str(const char *p, size_t n)
{
    char *s = xrealloc(NULL, n + 1);
    if (p) memcpy(s, p, n);
    else memset(s, 0, n);
    s[n] = 0;
    if (nkept == capkept) {
        capkept = capkept ? 2 * capkept : 64;
        kept = xrealloc(kept, capkept * sizeof *kept);
    }
    kept[nkept++] = s;
    return s; /* deliberately never freed: string flags point into it */
}

static int apply_key(flag_table *t, const char *where, char *key, const char *val)
{
    for (char *k = key; *k; k++)
        if (*k == '_') *k = '-';
    flag_spec *fs = flags_find(t, key);
    if (!fs) {
        const char *c = closest(t, key);
        cli_error("%sunknown key '%s'%s%s%s", where, key, c ? " (did you mean '" : "", c ? c : "", c ? "'?)" : "");
        return EXIT_USAGE;
    }
    if (!val) return 0; /* null: keep the default */
    int r = set_value(fs, val, where);
    if (r) return r;
    fs->set = 2;
    return 0;
}

/* key = value lines; '#' starts a comment outside quotes; a value may be quoted. */
static int load_kv(flag_table *t, const char *path, const char *text)
{
    int line = 0;
    const char *p = text;
    while (*p) {
        line++;
        const char *eol = strchr(p, '\n');
        size_t len = eol ? (size_t)(eol - p) : strlen(p);
        char *l = keep_str(p, len);
        p += len + (eol ? 1 : 0);
        char where[1200];
        snprintf(where, sizeof where, "--config %s: line %d: ", path, line);
        /* cut the comment (a '#' outside quotes) */
        int inq = 0;
        for (char *c = l; *c; c++) {
            if (*c == '"') inq = !inq;
            else if (*c == '#' && !inq) {
                *c = 0;
                break;
            }
        }
        char *b = l;
        while (isspace((unsigned char)*b)) b++;
        char *e = b + strlen(b);
        while (e > b && isspace((unsigned char)e[-1])) *--e = 0;
        if (!*b) continue;
        char *eq = strchr(b, '=');
        if (!eq) eq = strchr(b, ':'); /* "key: value" too */
        if (!eq) {
            cli_error("%sexpected 'key = value', found '%s'", where, b);
            return EXIT_USAGE;
        }
        char *ke = eq;
        while (ke > b && isspace((unsigned char)ke[-1])) ke--;
        *ke = 0;
        char *v = eq + 1;
        while (isspace((unsigned char)*v)) v++;
        if (!*b) {
            cli_error("%sexpected a key before '=', found '%s'", where, l);
            return EXIT_USAGE;
        }
        size_t vl = strlen(v);
        if (vl >= 2 && v[0] == '"' && v[vl - 1] == '"') {
            v[vl - 1] = 0;
            v++;
        } else if (v[0] == '"') {
            cli_error("%sunterminated quoted value for '%s': %s", where, b, v);
            return EXIT_USAGE;
        }
        int r = apply_key(t, where, b, v);
        if (r) return r;
    }
    return 0;
}

/* A flat JSON object {"key": value, ...}: strings, numbers, true/false, null, arrays of
 * numbers or strings (joined with commas, as --milestones takes them). */
typedef struct jp {
    const char *text, *p, *path;
} jp;

static void jp_where(const jp *j, char *buf, size_t n)
{
    int line = 1, col = 1;
    for (const char *c = j->text; c < j->p; c++) {
        if (*c == '\n') line++, col = 1;
        else col++;
    }
    snprintf(buf, n, "--config %s: line %d, column %d (byte %ld): ", j->path, line, col, (long)(j->p - j->text));
}

static int jp_err(const jp *j, const char *expected)
{
    char w[1200];
    jp_where(j, w, sizeof w);
    char found[24];
    if (!*j->p) snprintf(found, sizeof found, "end of file");
    else {
        size_t k = 0;
        found[k++] = '\'';
        for (const char *c = j->p; *c && *c != '\n' && k < 12; c++) found[k++] = *c;
        found[k++] = '\'';
        found[k] = 0;
    }
    cli_error("%sexpected %s, found %s", w, expected, found);
    return EXIT_USAGE;
}

static void jp_ws(jp *j)
{
    while (isspace((unsigned char)*j->p)) j->p++;
}

/* A string at j->p (after the opening quote has been checked) into a kept buffer. */
static int jp_string(jp *j, char **out)
{
    j->p++;
    const char *q = j->p; /* the raw length bounds the unescaped one */
    while (*q && *q != '"') q += q[0] == '\\' && q[1] ? 2 : 1;
    char *s = keep_str(NULL, (size_t)(q - j->p) + 1);
    size_t n = 0;
    while (*j->p && *j->p != '"') {
        char c = *j->p++;
        if ((unsigned char)c < 0x20) {
            j->p--;
            return jp_err(j, "a closing '\"' (strings end on the same line)");
        }
        if (c == '\\') {
            char e = *j->p++;
            switch (e) {
            case '"': case '\\': case '/': c = e; break;
            case 'n': c = '\n'; break;
            case 't': c = '\t'; break;
            case 'r': c = '\r'; break;
            case 'b': c = '\b'; break;
            case 'f': c = '\f'; break;
            default: j->p -= 2; return jp_err(j, "an escape \\\" \\\\ \\/ \\n \\t \\r \\b or \\f");
            }
        }
        s[n++] = c;
    }
    if (*j->p != '"') return jp_err(j, "a closing '\"'");
    j->p++;
    s[n] = 0;
    *out = s;
    return 0;
}

/* A scalar (number, true, false, null) as its text. */
static int jp_scalar(jp *j, char **out)
{
    const char *b = j->p;
    while (*j->p && (isalnum((unsigned char)*j->p) || strchr("+-.", *j->p))) j->p++;
    if (j->p == b) return jp_err(j, "a value (string, number, true, false, null or [list])");
    *out = keep_str(b, (size_t)(j->p - b));
    return 0;
}

static int jp_value(jp *j, char **out)
{
    jp_ws(j);
    if (*j->p == '"') return jp_string(j, out);
    if (*j->p == '[') {
        j->p++;
        size_t n = 0, cap = 64;
        char *s = xrealloc(NULL, cap);
        s[0] = 0;
        jp_ws(j);
        if (*j->p == ']') {
            j->p++;
            *out = keep_str(s, 0);
            free(s);
            return 0;
        }
        for (;;) {
            char *item;
            jp_ws(j);
            int r = *j->p == '"' ? jp_string(j, &item) : jp_scalar(j, &item);
            if (r) {
                free(s);
                return r;
            }
            size_t il = strlen(item);
            if (n + il + 2 > cap) {
                while (n + il + 2 > cap) cap *= 2;
                s = xrealloc(s, cap);
            }
            if (n) s[n++] = ',';
            memcpy(s + n, item, il);
            n += il;
            s[n] = 0;
            jp_ws(j);
            if (*j->p == ',') {
                j->p++;
                continue;
            }
            if (*j->p == ']') {
                j->p++;
                break;
            }
            free(s);
            return jp_err(j, "',' or ']' in a list");
        }
        *out = keep_str(s, n);
        free(s);
        return 0;
    }
    if (*j->p == '{') return jp_err(j, "a string, number, true, false, null or [list] (nested objects are not flags)");
    return jp_scalar(j, out);
}

static int load_json(flag_table *t, const char *path, const char *text)
{
    jp j = {text, text, path};
    jp_ws(&j);
    j.p++; /* '{' */
    jp_ws(&j);
    if (*j.p == '}') {
        j.p++;
    } else {
        for (;;) {
            jp_ws(&j);
            if (*j.p != '"') return jp_err(&j, "a key in double quotes");
            char w[1200];
            jp_where(&j, w, sizeof w);
            char *key;
            int r = jp_string(&j, &key);
            if (r) return r;
            jp_ws(&j);
            if (*j.p != ':') return jp_err(&j, "':' after the key");
            j.p++;
            jp_ws(&j);
            int is_null = !strncmp(j.p, "null", 4) && !isalnum((unsigned char)j.p[4]);
            const char *vstart = j.p;
            char *val;
            r = jp_value(&j, &val);
            if (r) return r;
            const char *vend = j.p;
            j.p = vstart;
            jp_where(&j, w, sizeof w);
            j.p = vend;
            r = apply_key(t, w, key, is_null ? NULL : val);
            if (r) return r;
            jp_ws(&j);
            if (*j.p == ',') {
                j.p++;
                continue;
            }
            if (*j.p == '}') {
                j.p++;
                break;
            }
            return jp_err(&j, "',' or '}' after a value");
        }
    }
    jp_ws(&j);
    if (*j.p) return jp_err(&j, "the end of the file after the closing '}'");
    return 0;
}

/* Config file: a flat JSON object (as written by flags_write_json) or key = value lines ('#'
 * comments). Opened with nnc__fopen_regular: a FIFO, device or folder is refused at once. */
static int load_config(flag_table *t, const char *path)
{
    int status = 0;
    FILE *f = nnc__fopen_regular(path, "--config", &status);
    if (!f) {
        cli_error("%s", nnc_error_message());
        return EXIT_USAGE;
    }
    char *text = malloc((1 << 20) + 2);
    if (!text) {
        fclose(f);
        cli_error("--config %s: out of memory", path);
        return EXIT_RUNTIME;
    }
    size_t got = fread(text, 1, (1 << 20) + 1, f);
    int rerr = ferror(f) ? errno : 0;
    fclose(f);
    if (rerr) {
        free(text);
        cli_error("--config %s: cannot read: %s", path, strerror(rerr));
        return EXIT_USAGE;
    }
    if (got > (1 << 20)) {
        free(text);
        cli_error("--config %s: expected a config file of at most 1 MiB, found a larger file", path);
        return EXIT_USAGE;
    }
    text[got] = 0;
    if (strlen(text) != got) {
        size_t at = strlen(text);
        free(text);
        cli_error("--config %s: expected text, found a NUL byte at byte %zu", path, at);
        return EXIT_USAGE;
    }
    const char *b = text;
    while (isspace((unsigned char)*b)) b++;
    int r = *b == '{' ? load_json(t, path, text) : load_kv(t, path, text);
    free(text); /* values were copied (keep_str) */
    return r;
}

int flags_parse(flag_table *t, int argc, char **argv)
{
    t->npositional = 0;
    /* --config first, so the command line overrides it. */
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--config") && i + 1 < argc) {
            int r = load_config(t, argv[i + 1]);
            if (r) return r;
        } else if (!strncmp(argv[i], "--config=", 9)) {
            int r = load_config(t, argv[i] + 9);
            if (r) return r;
        }
    }
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            flags_print_help(t, stdout);
            return 1;
        }
        if (strncmp(a, "--", 2) != 0 || !strcmp(a, "-")) {
            if (t->npositional >= t->max_positional) {
                cli_error("%s: unexpected argument '%s' (see nnc %s --help)", t->command, a, t->command);
                return EXIT_USAGE;
            }
            t->positional[t->npositional++] = argv[i];
            continue;
        }
        char name[128];
        const char *eq = strchr(a + 2, '=');
        size_t len = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
        if (len >= sizeof name) len = sizeof name - 1;
        memcpy(name, a + 2, len);
        name[len] = 0;
        if (!strcmp(name, "config")) {
            if (!eq && i + 1 >= argc) {
                cli_error("%s: flag '--config' needs a value (a JSON or key = value file)", t->command);
                return EXIT_USAGE;
            }
            if (!eq) i++;
            continue;
        }
        flag_spec *f = flags_find(t, name);
        int negated = 0;
        if (!f && !strncmp(name, "no-", 3)) {
            flag_spec *g = flags_find(t, name + 3);
            if (g && g->type == FLAG_BOOL) {
                f = g;
                negated = 1;
            }
        }
        if (!f) {
            const char *c = closest(t, name);
            if (c)
                cli_error("%s: unknown flag '--%s' (did you mean '--%s'?)", t->command, name, c);
            else
                cli_error("%s: unknown flag '--%s' (see nnc %s --help)", t->command, name, t->command);
            return EXIT_USAGE;
        }
        const char *val;
        if (f->type == FLAG_BOOL && !eq) {
            val = negated ? "false" : "true";
        } else if (eq) {
            val = eq + 1;
        } else {
            if (i + 1 >= argc) {
                cli_error("%s: flag '--%s' needs a value", t->command, name);
                return EXIT_USAGE;
            }
            val = argv[++i];
        }
        int r = set_value(f, val, "");
        if (r) return r;
        f->set = 1;
    }
    return 0;
}

void flags_print_help(const flag_table *t, FILE *f)
{
    fprintf(f, "usage: %s\n\n%s\n\nflags:\n", t->usage, t->summary);
    for (int i = 0; i < t->nflags; i++) {
        const flag_spec *s = &t->flags[i];
        char left[64], def[64] = "";
        const char *arg = s->type == FLAG_BOOL ? "" : s->type == FLAG_STR ? " S" : s->type <= FLAG_LONG ? " N" : " F";
        snprintf(left, sizeof left, "--%s%s", s->name, arg);
        switch (s->type) {
        case FLAG_INT: snprintf(def, sizeof def, "%d", *(int *)s->dest); break;
        case FLAG_LONG: snprintf(def, sizeof def, "%ld", *(long *)s->dest); break;
        case FLAG_FLOAT: cli_format_float(*(float *)s->dest, def, sizeof def); break;
        case FLAG_DOUBLE: cli_format_double(*(double *)s->dest, def, sizeof def); break;
        case FLAG_STR: snprintf(def, sizeof def, "%s", *(const char **)s->dest ? *(const char **)s->dest : ""); break;
        case FLAG_BOOL: snprintf(def, sizeof def, "%s", *(int *)s->dest < 0 ? "auto" : *(int *)s->dest ? "on" : "off"); break;
        }
        fprintf(f, "  %-22s %s%s%s%s\n", left, s->help, def[0] ? " [" : "", def, def[0] ? "]" : "");
    }
    fprintf(f, "  %-22s %s\n  %-22s %s\n", "--config FILE", "read flags from a JSON or key=value file (flags win)",
            "--help", "show this help");
}

const char *cli_format_float(float v, char *buf, size_t n)
{
    for (int prec = 1; prec <= 9; prec++) {
        snprintf(buf, n, "%.*g", prec, (double)v);
        if (strtof(buf, NULL) == v) break;
    }
    return buf;
}

const char *cli_format_double(double v, char *buf, size_t n)
{
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, n, "%.*g", prec, v);
        if (strtod(buf, NULL) == v) break;
    }
    return buf;
}

void flags_write_json(const flag_table *t, FILE *f)
{
    fprintf(f, "{\n");
    for (int i = 0; i < t->nflags; i++) {
        const flag_spec *s = &t->flags[i];
        fprintf(f, "  \"%s\": ", s->name);
        switch (s->type) {
        case FLAG_INT: fprintf(f, "%d", *(int *)s->dest); break;
        case FLAG_LONG: fprintf(f, "%ld", *(long *)s->dest); break;
        case FLAG_FLOAT: {
            char b[32];
            fputs(cli_format_float(*(float *)s->dest, b, sizeof b), f);
            break;
        }
        case FLAG_DOUBLE: {
            char b[32];
            fputs(cli_format_double(*(double *)s->dest, b, sizeof b), f);
            break;
        }
        case FLAG_BOOL: fprintf(f, "%s", *(int *)s->dest ? "true" : "false"); break;
        case FLAG_STR: {
            const char *v = *(const char **)s->dest;
            if (!v) {
                fprintf(f, "null");
                break;
            }
            fputc('"', f);
            for (; *v; v++) {
                if (*v == '"' || *v == '\\') fputc('\\', f);
                fputc(*v, f);
            }
            fputc('"', f);
            break;
        }
        }
        fprintf(f, "%s\n", i + 1 < t->nflags ? "," : "");
    }
    fprintf(f, "}\n");
}
