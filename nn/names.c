/* nn/names.c - edit distance and the closest name (see nn/names.h). */
#include "nn/names.h"

#include <string.h>

int nnc__edit_distance(const char *a, const char *b)
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

const char *nnc__closest_name(const char *name, const char *const *cands, int n)
{
    if (!name || !*name) return NULL;
    for (int i = 0; i < n; i++)
        if (cands[i] && !strcmp(cands[i], name)) return NULL;
    const char *best = NULL;
    int bd = 4;
    for (int i = 0; i < n; i++) {
        if (!cands[i]) continue;
        int d = nnc__edit_distance(name, cands[i]);
        if (d >= (int)strlen(cands[i])) continue;
        if (d < bd || (strstr(cands[i], name) && d < 6 && !best)) {
            bd = d;
            best = cands[i];
        }
    }
    return best;
}
