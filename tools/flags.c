/* tools/flags.c - flag tables: parsing, --config files, help, "did you mean", JSON dump. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

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

static int edit_distance(const char *a, const char *b)
{
    int la = (int)strlen(a), lb = (int)strlen(b);
    if (la > 63 || lb > 63) return 99;
    int d[64][64];
    for (int i = 0; i <= la; i++) d[i][0] = i;
    for (int j = 0; j <= lb; j++) d[0][j] = j;
    for (int i = 1; i <= la; i++)
        for (int j = 1; j <= lb; j++) {
            int c = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
            if (d[i - 1][j] + 1 < c) c = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < c) c = d[i][j - 1] + 1;
            d[i][j] = c;
        }
    return d[la][lb];
}

static const char *closest(const flag_table *t, const char *name)
{
    const char *best = NULL;
    int bd = 4;
    for (int i = 0; i < t->nflags; i++) {
        int d = edit_distance(name, t->flags[i].name);
        if (d < bd || (strstr(t->flags[i].name, name) && d < 6 && !best)) {
            bd = d;
            best = t->flags[i].name;
        }
    }
    return best;
}

static int set_value(flag_spec *f, const char *v, const char *origin)
{
    char *end = NULL;
    errno = 0;
    switch (f->type) {
    case FLAG_INT:
    case FLAG_LONG: {
        long x = strtol(v, &end, 10);
        if (!*v || *end || errno || (f->type == FLAG_INT && (x > 2147483647L || x < -2147483647L))) {
            cli_error("%s--%s: expected an integer, found '%s'", origin, f->name, v);
            return EXIT_USAGE;
        }
        if (f->type == FLAG_INT)
            *(int *)f->dest = (int)x;
        else
            *(long *)f->dest = x;
        break;
    }
    case FLAG_FLOAT:
    case FLAG_DOUBLE: {
        double x = strtod(v, &end);
        if (!*v || *end || errno || !isfinite(x)) {
            cli_error("%s--%s: expected a number, found '%s'", origin, f->name, v);
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
        if (!strcmp(v, "1") || !strcmp(v, "true") || !strcmp(v, "yes"))
            *(int *)f->dest = 1;
        else if (!strcmp(v, "0") || !strcmp(v, "false") || !strcmp(v, "no"))
            *(int *)f->dest = 0;
        else {
            cli_error("%s--%s: expected true or false, found '%s'", origin, f->name, v);
            return EXIT_USAGE;
        }
        break;
    }
    return 0;
}

/* Config texts stay reachable for the process lifetime: string flags point into them. */
static char *config_texts[8];
static int nconfig_texts;

/* Config file: flat JSON object {"key": value, ...} (as written by flags_write_json) or
 * key = value lines ('#' comments). Strings are kept for the process lifetime. */
static int load_config(flag_table *t, const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        cli_error("--config %s: %s", path, strerror(errno));
        return EXIT_USAGE;
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    if (n < 0 || n > (1 << 20)) {
        fclose(f);
        cli_error("--config %s: not a config file (size %ld)", path, n);
        return EXIT_USAGE;
    }
    char *text = malloc((size_t)n + 1);
    size_t got = fread(text, 1, (size_t)n, f);
    fclose(f);
    text[got] = 0;
    if (nconfig_texts < 8) config_texts[nconfig_texts++] = text;
    char *p = text;
    int line = 1;
    while (*p) {
        while (*p && (isspace((unsigned char)*p) || *p == '{' || *p == '}' || *p == ',')) {
            if (*p == '\n') line++;
            p++;
        }
        if (!*p) break;
        if (*p == '#') {
            while (*p && *p != '\n') p++;
            continue;
        }
        char *key = p;
        if (*p == '"') {
            key = ++p;
            while (*p && *p != '"') p++;
            if (*p) *p++ = 0;
        } else {
            while (*p && (isalnum((unsigned char)*p) || *p == '-' || *p == '_')) p++;
        }
        char *kend = p;
        while (*p == ' ' || *p == '\t') p++;
        if (*p != ':' && *p != '=') {
            cli_error("--config %s: line %d: expected ':' or '=' after key", path, line);
            return EXIT_USAGE;
        }
        *kend = 0;
        p++;
        while (*p == ' ' || *p == '\t') p++;
        char *val = p;
        if (*p == '"') {
            val = ++p;
            while (*p && *p != '"') p++;
            if (*p) *p++ = 0;
        } else {
            while (*p && *p != ',' && *p != '\n' && *p != '}' && *p != '#') p++;
            char *e = p;
            while (e > val && isspace((unsigned char)e[-1])) e--;
            char c = *p;
            *e = 0;
            if (e != p) p++;
            else if (c) *p++ = 0;
        }
        for (char *k = key; *k; k++)
            if (*k == '_') *k = '-';
        flag_spec *fs = flags_find(t, key);
        if (!fs) {
            const char *c = closest(t, key);
            cli_error("--config %s: line %d: unknown key '%s'%s%s%s", path, line, key,
                      c ? " (did you mean '" : "", c ? c : "", c ? "'?)" : "");
            return EXIT_USAGE;
        }
        if (!strcmp(val, "null")) continue;
        char origin[1100];
        snprintf(origin, sizeof origin, "--config %s: ", path);
        int r = set_value(fs, val, origin);
        if (r) return r;
        fs->set = 2;
    }
    return 0;
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
        case FLAG_FLOAT: snprintf(def, sizeof def, "%g", *(float *)s->dest); break;
        case FLAG_DOUBLE: snprintf(def, sizeof def, "%g", *(double *)s->dest); break;
        case FLAG_STR: snprintf(def, sizeof def, "%s", *(const char **)s->dest ? *(const char **)s->dest : ""); break;
        case FLAG_BOOL: snprintf(def, sizeof def, "%s", *(int *)s->dest < 0 ? "auto" : *(int *)s->dest ? "on" : "off"); break;
        }
        fprintf(f, "  %-22s %s%s%s%s\n", left, s->help, def[0] ? " [" : "", def, def[0] ? "]" : "");
    }
    fprintf(f, "  %-22s %s\n  %-22s %s\n", "--config FILE", "read flags from a JSON or key=value file (flags win)",
            "--help", "show this help");
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
        case FLAG_FLOAT: fprintf(f, "%.9g", *(float *)s->dest); break;
        case FLAG_DOUBLE: fprintf(f, "%.17g", *(double *)s->dest); break;
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
